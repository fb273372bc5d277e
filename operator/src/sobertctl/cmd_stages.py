"""`sobertctl pretrain RUN` / `sobertctl convert RUN`: one stage of a submitted run, alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from sobert_api import paths
from sobert_api.loading import build_spec


def register(sub) -> None:
    for name, helptext in (
        ("pretrain", "Pretrain (or resume) a submitted run."),
        ("convert", "Convert a run's checkpoint to Hugging Face."),
    ):
        parser = sub.add_parser(name, help=helptext)
        parser.add_argument("run", help="Run name.")
        parser.add_argument("--storage", default=".sobert", help="Storage prefix holding runs/<run>/spec.json.")
        parser.add_argument("--endpoint-url", help="S3 endpoint for non-AWS servers.")
        parser.add_argument("--workdir", type=Path, default=Path(".sobert/work"), help="Local scratch.")
        if name == "convert":
            parser.add_argument("--step", type=int, help="Checkpoint step (default: newest complete).")
        parser.set_defaults(handler=run_stage, stage=name)


def run_stage(args: argparse.Namespace) -> int:
    from sobert_operator.local_executor import LocalExecutor
    from sobert_operator.pipeline import Stage
    from sobert_trainer.storage import Storage

    storage = Storage.open(args.storage, args.endpoint_url)
    key = paths.spec_key(args.run)
    if not storage.exists(key):
        raise FileNotFoundError(f"{storage.uri(key)}: no such run (submit it first)")
    spec = build_spec(storage.read_json(key), source=storage.uri(key))
    executor = LocalExecutor(spec, args.workdir)
    stage = Stage(args.stage)
    if stage is Stage.pretrain and not executor.observe().dataset_published:
        raise FileNotFoundError(
            f"dataset {executor.dataset_id} is not published; run `sobertctl data prepare` or submit"
        )
    executor.run_stage(stage, step=getattr(args, "step", None))
    return 0
