"""Score a finetuned task's best checkpoint on a held-out file (never used for training or tuning).

`python -m sobert_trainer.finetune.evaluate --spec spec.json --task TASK --split NAME --uri FILE`
(`sobert_api.stages.evaluate_args`; what `sobertctl eval` runs) writes
runs/<run>/finetune/<task>/eval-<split>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from sobert_api import paths
from sobert_api.spec import RunSpec, TaskName
from sobert_api.stages import EXIT_BAD_INPUT, EXIT_FAILED
from sobert_api.storage import Storage
from sobert_trainer.finetune import tasks
from sobert_trainer.finetune.job import fetch_input
from sobert_trainer.stage_cli import report_error, start_task_stage, task_stage_parser


def evaluate_split(spec: RunSpec, name: TaskName, uri: str, split: str) -> dict[str, Any]:
    """Evaluate the published best checkpoint of `name` on `uri`; writes finetune/<task>/eval-<split>.json."""
    from transformers import PreTrainedTokenizerFast

    from sobert_trainer.finetune.encode import encode_examples
    from sobert_trainer.finetune.train_loop import _load_model, evaluate

    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    task = spec.finetune.tasks[name]
    info = tasks.task_info(name, task)
    prefix = paths.finetune_checkpoint_prefix(spec.name, name.value)
    if storage.read_manifest(prefix) is None:
        raise FileNotFoundError(f"no finetuned {name.value} model at {storage.uri(prefix)}; finetune it first")
    with tempfile.TemporaryDirectory(prefix="sobert-eval-") as scratch:
        model_dir = Path(scratch) / "model"
        storage.fetch_tree(prefix, model_dir)
        loaded = tasks.load_split(
            name, task, uri, local_path=fetch_input(uri, spec.storage.endpoint_url, Path(scratch))
        )
        examples = loaded.examples
        tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
        model = _load_model(str(model_dir), info.kind, list(info.labels))
        max_length = task.max_length or spec.model.max_position_embeddings
        items, gold = encode_examples(tokenizer, info.kind, examples, info.labels, max_length)
        scores = evaluate(model, items, gold, info.kind, list(info.labels), tokenizer.pad_token_id, 16)
    result = {"task": name.value, "split": split, "source": uri, "skipped_rows": loaded.skipped, "metrics": scores}
    storage.write_json(paths.finetune_eval_key(spec.name, name.value, split), result)
    return result


def build_parser() -> argparse.ArgumentParser:
    """This entry point's flags: those `sobert_api.stages` builds its command with."""
    parser = task_stage_parser("python -m sobert_trainer.finetune.evaluate", __doc__, "Task to score.")
    parser.add_argument("--split", required=True, help="Name of the held-out split (eval-<split>.json).")
    parser.add_argument("--uri", required=True, help="The held-out file, local or s3://.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = start_task_stage(args.spec, args.task)
    if started is None:
        return EXIT_BAD_INPUT
    spec, task = started
    from sobert_api.task_files import TaskDataError

    try:
        evaluate_split(spec, task, args.uri, args.split)
    except TaskDataError as exc:
        report_error(exc)
        return EXIT_BAD_INPUT
    except FileNotFoundError as exc:
        report_error(exc)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
