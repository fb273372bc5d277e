"""`python -m sobert_trainer.finetune --spec spec.json --task TASK`: one Ray Train finetune job.

The entrypoint of a KubeRay RayJob and of the embedded executor's finetune stage. Exit codes:
0 done, 1 the job failed, 2 bad spec or task data.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from sobert_api.spec import RunSpec, TaskName
from sobert_api.stages import EXIT_BAD_INPUT, EXIT_FAILED
from sobert_trainer.stage_cli import report_error, start_task_stage, task_stage_parser


def build_parser() -> argparse.ArgumentParser:
    """This entry point's flags: those `sobert_api.stages` builds its command with."""
    return task_stage_parser("python -m sobert_trainer.finetune", __doc__, "Task to finetune.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = start_task_stage(args.spec, args.task)
    if started is None:
        return EXIT_BAD_INPUT
    spec, task = started
    from sobert_api import paths
    from sobert_api.storage import Storage
    from sobert_trainer.finetune.driver_log import copied_to_storage

    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    with copied_to_storage(storage, paths.finetune_driver_log_key(spec.name, task.value)):
        try:
            return _run(spec, task)
        except Exception:  # the traceback goes into the copied log too
            traceback.print_exc()
            return EXIT_FAILED


def _run(spec: RunSpec, task: TaskName) -> int:
    from sobert_api.task_files import TaskDataError
    from sobert_trainer.finetune.job import TaskDataMissingError, run_task

    try:
        metrics = run_task(spec, task)
    except (TaskDataError, TaskDataMissingError) as exc:
        report_error(exc)
        return EXIT_BAD_INPUT
    except FileNotFoundError as exc:
        report_error(exc)
        return EXIT_FAILED
    score = f"{metrics['primary_metric']}={metrics['score']:.4f}"
    print(f"finetune {task.value}: {score} (best epoch {metrics['best_epoch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
