"""`python -m sobert_trainer.finetune --spec spec.json --task TASK`: one Ray Train finetune job.

The entrypoint of a KubeRay RayJob and of the embedded executor's finetune stage. Exit codes:
0 done, 1 the job failed, 2 bad spec or task data.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from sobert_api.spec import RunSpec, TaskName
from sobert_trainer.stage_cli import EXIT_BAD_INPUT, start_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.finetune", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json.")
    parser.add_argument("--task", required=True, choices=[t.value for t in TaskName], help="Task to finetune.")
    args = parser.parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    task = TaskName(args.task)
    if task not in spec.finetune.tasks:
        print(f"error: {args.spec}: finetune.tasks has no {task.value!r} entry", file=sys.stderr)
        return EXIT_BAD_INPUT
    from sobert_api import paths
    from sobert_trainer.finetune.driver_log import copied_to_storage
    from sobert_trainer.storage import Storage

    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    with copied_to_storage(storage, paths.finetune_driver_log_key(spec.name, task.value)):
        try:
            return _run(spec, task)
        except Exception:  # the traceback goes into the copied log too
            traceback.print_exc()
            return 1


def _run(spec: RunSpec, task: TaskName) -> int:
    from sobert_trainer.finetune.examples import TaskDataError
    from sobert_trainer.finetune.job import TaskDataMissingError, run_task

    try:
        metrics = run_task(spec, task)
    except (TaskDataError, TaskDataMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    score = f"{metrics['primary_metric']}={metrics['score']:.4f}"
    print(f"finetune {task.value}: {score} (best epoch {metrics['best_epoch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
