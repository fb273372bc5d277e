"""`sobertctl eval RUN`: score a run's finetuned models on held-out data (no training on it).

Splits are named files: `--split ner=path/test.txt` (repeatable), or `--eval-dir DIR` for a
directory laid out like ../shared/eval (each task's known held-out files). Each split is scored by
the trainer's evaluation entry point (`python -m sobert_trainer.finetune.evaluate`), which writes
runs/<run>/finetune/<task>/eval-<split>.json; the results print as a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sobert_api import paths
from sobert_api.spec import TaskName
from sobert_api.stages import evaluate_args
from sobertctl.trainer_process import run_stage, spec_file

# Held-out files of ../shared/eval, by task: (split name, path below the eval dir).
EVAL_DIR_LAYOUT: dict[TaskName, list[tuple[str, str]]] = {
    TaskName.quality: [("heldout", "question_quality/*.jsonl")],
    TaskName.closed: [("heldout", "closed_questions/heldout_2000.csv")],
    TaskName.ner: [("test", "ner/test.txt"), ("github", "ner/GH_test_set.txt")],
    TaskName.obsoletion: [("heldout", "obsoletion/*.csv")],
}


def register(sub) -> None:
    parser = sub.add_parser("eval", help="Evaluate a run's finetuned models on held-out splits.")
    parser.add_argument("run", help="Run name.")
    parser.add_argument("--storage", default=".sobert", help="Storage prefix holding runs/<run>/.")
    parser.add_argument("--endpoint-url", help="S3 endpoint for non-AWS servers.")
    parser.add_argument(
        "--split", action="append", default=[], metavar="TASK=PATH", help="A held-out file for a task (repeatable)."
    )
    parser.add_argument("--eval-dir", type=Path, help="A directory laid out like ../shared/eval.")
    parser.set_defaults(handler=run)


def splits_from_args(args: argparse.Namespace, tasks: list[TaskName]) -> list[tuple[TaskName, str, str]]:
    """(task, split name, uri) for every split asked for, restricted to the run's tasks."""
    chosen: list[tuple[TaskName, str, str]] = []
    for item in args.split:
        task, sep, uri = item.partition("=")
        if not sep or task not in TaskName.__members__:
            raise ValueError(f"--split {item!r}: expected TASK=PATH with TASK one of {', '.join(TaskName)}")
        chosen.append((TaskName(task), Path(uri).stem if "://" not in uri else uri.rsplit("/", 1)[-1], uri))
    if args.eval_dir:
        if not args.eval_dir.is_dir():
            raise FileNotFoundError(f"--eval-dir {args.eval_dir}: no such directory")
        for task, layout in EVAL_DIR_LAYOUT.items():
            for split, pattern in layout:
                chosen += [(task, split, str(path)) for path in sorted(args.eval_dir.glob(pattern))]
    return [c for c in chosen if c[0] in tasks]


def run(args: argparse.Namespace) -> int:
    from sobert_api.storage import Storage
    from sobertctl.cmd_stages import load_run_spec

    spec = load_run_spec(args.storage, args.endpoint_url, args.run)
    splits = splits_from_args(args, list(spec.finetune.tasks))
    if not splits:
        raise ValueError(f"no held-out split for the tasks of run {spec.name}; give --split TASK=PATH or --eval-dir")
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    print("| task | split | examples | metric | score |")
    print("| --- | --- | ---: | --- | ---: |")
    with spec_file(spec) as path:
        for task, split, uri in splits:
            run_stage("sobertctl eval", evaluate_args(path, task.value, split, uri))
            m = storage.read_json(paths.finetune_eval_key(spec.name, task.value, split))["metrics"]
            metric = "f1" if "f1" in m else "macro_f1"
            count = m.get("examples", m.get("sentences"))
            print(f"| {task.value} | {split} | {count} | {metric} | {m[metric]:.4f} |", flush=True)
    return 0
