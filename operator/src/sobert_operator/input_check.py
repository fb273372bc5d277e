"""Every file a run will read, checked before anything is spent on it.

`sobertctl submit` (before it runs or creates anything) and the controller (before a run's first
stage) read each input with the run's credentials: the posts and comments dumps must exist and be
readable, and the head of each finetune task file must parse through its task's record reader
(`sobert_api.task_files`, which the trainer's loaders are built on). A typo in a task file's name
is then an error at submit, not after hours of pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass

from sobert_api.spec import FinetuneTaskSpec, RunSpec, TaskName
from sobert_api.storage import StorageError, open_uri
from sobert_api.task_files import TaskDataError, check_head

HEAD_BYTES = 1 << 20
"""How much of a task file is read: its first records, never the whole of a large file."""
HEAD_RECORDS = 100
"""How many records (NER: sentences) of each task file are parsed."""
DENIED_CODES = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
# The server's answers that no retry changes: the input is wrong, not the network.
PERMANENT_CODES = DENIED_CODES | {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
EXPECTED = {
    TaskName.quality: "the Kaggle quality CSV (Id,Title,Body,Tags,CreationDate,Y) or JSON Lines with text and rating",
    TaskName.closed: "the Kaggle 2012 closed-questions CSV (PostId,Title,BodyMarkdown,Tag1..Tag5,OpenStatus)",
    TaskName.ner: "a StackOverflowNER CoNLL file (token, entity tag, token, markup tag per line)",
    TaskName.obsoletion: "a labelled CSV (post_id,text,label)",
}


class InputsUnreachable(RuntimeError):
    """Storage could not be asked (a network error, a server error): nothing is known yet."""


@dataclass(frozen=True)
class RunInput:
    """One file a run reads: the spec field that names it, and for a task file, its task."""

    field: str
    uri: str
    task: TaskName | None = None
    task_spec: FinetuneTaskSpec | None = None


def run_inputs(spec: RunSpec) -> list[RunInput]:
    """Every file the run will read, in the order its stages read them."""
    inputs = [RunInput(f"data.posts[{i}]", uri) for i, uri in enumerate(spec.data.posts)]
    inputs += [RunInput(f"data.comments[{i}]", uri) for i, uri in enumerate(spec.data.comments)]
    for name, task in spec.finetune.tasks.items():
        for split in ("train", "validation"):
            uri = getattr(task, split)
            if uri:
                inputs.append(RunInput(f"finetune.tasks.{name.value}.{split}", uri, name, task))
    return inputs


def check_inputs(spec: RunSpec, credentials: tuple[str, str] | None = None) -> list[str]:
    """What is wrong with the run's inputs (empty when nothing is), read with `credentials` (else
    the environment's). Raises `InputsUnreachable` when storage cannot be asked."""
    return [problem for item in run_inputs(spec) if (problem := _check(item, spec, credentials))]


def _check(item: RunInput, spec: RunSpec, credentials: tuple[str, str] | None) -> str | None:
    size = HEAD_BYTES if item.task else 1
    try:
        with open_uri(item.uri, spec.storage.endpoint_url, credentials) as handle:
            head = handle.read(size + 1)
    except StorageError as exc:
        if exc.code not in PERMANENT_CODES:
            raise InputsUnreachable(f"{item.field}: {exc}") from exc
        return f"{item.field}: {item.uri}: {_unreadable(exc.code)}"
    except OSError as exc:  # a local directory, or a file this user may not read
        return f"{item.field}: {item.uri}: cannot be read ({exc.strerror})"
    if item.task is None or item.task_spec is None:
        return None if head else f"{item.field}: {item.uri}: empty file"
    task = item.task_spec
    try:
        check_head(
            item.task,
            head[:size],
            item.uri,
            labels=task.labels,
            encoding=task.encoding,
            cut=len(head) > size,
            rows=HEAD_RECORDS,
        )
    except TaskDataError as exc:
        return f"{item.field}: {exc} (expected {EXPECTED[item.task]})"
    return None


def _unreadable(code: str | None) -> str:
    if code in DENIED_CODES:
        return f"access denied with the run's credentials ({code})"
    if code == "NoSuchBucket":
        return "no such bucket"
    return "not found"
