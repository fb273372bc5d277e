"""What every `python -m sobert_trainer.<stage>` entry point does first: log lines, read its spec.

The entry points, their flags and exit codes are the contract's (`sobert_api.stages`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sobert_api.loading import SpecError, build_spec
from sobert_api.spec import RunSpec, TaskName
from sobert_api.stages import ERROR_LINE, LOG_FORMAT


def start_stage(spec_path: Path) -> RunSpec | None:
    """Configure logging and load the run's spec.json; None after printing why (exit EXIT_BAD_INPUT)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        return build_spec(json.loads(spec_path.read_text()), source=str(spec_path))
    except (OSError, ValueError, SpecError) as exc:
        report_error(exc)
        return None


def report_error(exc: BaseException | str) -> None:
    """A stage's own error message, on stderr as the executors expect it (`ERROR_LINE`)."""
    print(f"{ERROR_LINE} {exc}", file=sys.stderr)


def task_stage_parser(prog: str, description: str | None, task_help: str) -> argparse.ArgumentParser:
    """The flags of a stage of one finetune task: the run's spec.json and the task."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json.")
    parser.add_argument("--task", required=True, choices=[t.value for t in TaskName], help=task_help)
    return parser


def start_task_stage(spec_path: Path, task: str) -> tuple[RunSpec, TaskName] | None:
    """`start_stage` for a stage of one finetune task: the spec and the task, or None after
    printing why (the spec is invalid, or lists no such task)."""
    spec = start_stage(spec_path)
    if spec is None:
        return None
    if TaskName(task) not in spec.finetune.tasks:
        report_error(f"{spec_path}: finetune.tasks has no {task!r} entry")
        return None
    return spec, TaskName(task)
