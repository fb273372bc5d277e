"""The four downstream tasks: what kind of head each needs, its labels, and how its data loads.

Everything task-specific lives here; the Ray Train loop and the driver are task-agnostic.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sobert_api.spec import DataSpec, FinetuneTaskSpec, TaskName
from sobert_trainer.finetune.encode import bio_labels
from sobert_trainer.finetune.examples import LoadResult, TextExample, TokenExample
from sobert_trainer.finetune.loaders import (
    CLOSED_LABELS,
    NER_TYPES,
    OBSOLETION_LABELS,
    QUALITY_LABELS,
    label_obsoletion,
    load_closed_questions,
    load_conll,
    load_labelled_csv,
    load_question_quality,
)

Example = TextExample | TokenExample


@dataclass(frozen=True)
class TaskInfo:
    name: TaskName
    kind: Literal["sequence", "token"]
    labels: tuple[str, ...]  # class labels, or BIO tags for token classification
    primary_metric: str  # what picks the best checkpoint


def task_info(name: TaskName, task: FinetuneTaskSpec) -> TaskInfo:
    if name is TaskName.ner:
        types = tuple(task.labels) if task.labels else NER_TYPES
        return TaskInfo(name, "token", tuple(bio_labels(types)), "f1")
    defaults = {
        TaskName.quality: QUALITY_LABELS,
        TaskName.closed: CLOSED_LABELS,
        TaskName.obsoletion: OBSOLETION_LABELS,
    }
    return TaskInfo(name, "sequence", tuple(task.labels) if task.labels else defaults[name], "macro_f1")


def load_split(name: TaskName, task: FinetuneTaskSpec, uri: str, *, local_path: str) -> LoadResult:
    """Load one task file (already fetched to `local_path`; `uri` is for messages)."""
    labels = tuple(task.labels) if task.labels else None
    if name is TaskName.quality:
        return load_question_quality(local_path, labels=labels or QUALITY_LABELS, encoding=task.encoding)
    if name is TaskName.closed:
        return load_closed_questions(local_path, labels=labels or CLOSED_LABELS, encoding=task.encoding)
    if name is TaskName.ner:
        return load_conll(local_path)
    return load_labelled_csv(local_path)


def weak_obsoletion_labels(data: DataSpec, endpoint_url: str | None) -> LoadResult:
    """Obsoletion without a labelled file: the comment rules over the run's own dump files (the
    spec requires a labelled file when it has no comments)."""
    results = [label_obsoletion(p, c) for p in data.posts for c in data.comments]
    examples = {e.id: e for r in results for e in r.examples}
    skipped: dict[str, int] = {}
    for r in results:
        for reason, n in r.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return LoadResult(examples=sorted(examples.values(), key=lambda e: e.id), skipped=skipped)


def _rank(example_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()


def split_validation(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list, list]:
    """A deterministic train/validation split by hashed example id (stable across reruns and workers)."""
    ordered = sorted(examples, key=lambda e: _rank(e.id, seed))
    cut = max(1, round(len(ordered) * fraction)) if len(ordered) > 1 else 0
    return ordered[cut:], ordered[:cut]


def cap(examples: Sequence[Example], limit: int | None, seed: int) -> list:
    """At most `limit` examples: a seeded sample that keeps the file's order."""
    if limit is None or len(examples) <= limit:
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
