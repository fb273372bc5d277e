"""`sobertctl pretrain|convert|finetune RUN`: one stage of a submitted run, alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from sobert_api import paths
from sobert_api.loading import build_spec
from sobert_api.spec import RunSpec


def register(sub) -> None:
    for name, helptext in (
        ("pretrain", "Pretrain (or resume) a submitted run."),
        ("convert", "Convert a run's checkpoint to Hugging Face."),
        ("finetune", "Finetune a run's converted model on its tasks (Ray Train), those not done yet."),
    ):
        parser = sub.add_parser(name, help=helptext)
        parser.add_argument("run", help="Run name.")
        parser.add_argument("--storage", default=".sobert", help="Storage prefix holding runs/<run>/spec.json.")
        parser.add_argument("--endpoint-url", help="S3 endpoint for non-AWS servers.")
        parser.add_argument("--workdir", type=Path, default=Path(".sobert/work"), help="Local scratch.")
        if name == "convert":
            parser.add_argument("--step", type=int, help="Checkpoint step (default: newest complete).")
        parser.set_defaults(handler=run_stage, stage=name)


def load_run_spec(storage_uri: str, endpoint_url: str | None, run: str) -> RunSpec:
    """The spec a run was submitted with (runs/<run>/spec.json)."""
    from sobert_api.storage import Storage

    storage = Storage.open(storage_uri, endpoint_url)
    key = paths.spec_key(run)
    if not storage.exists(key):
        raise FileNotFoundError(f"{storage.uri(key)}: no such run (submit it first)")
    return build_spec(storage.read_json(key), source=storage.uri(key))


def run_stage(args: argparse.Namespace) -> int:
    from sobert_operator.local_executor import LocalExecutor
    from sobert_operator.pipeline import Stage

    spec = load_run_spec(args.storage, args.endpoint_url, args.run)
    executor = LocalExecutor(spec, args.workdir)
    stage = Stage(args.stage)
    if stage is Stage.pretrain and not executor.observe().dataset_published:
        raise FileNotFoundError(
            f"dataset {executor.dataset_id} is not published; run `sobertctl data prepare` or submit"
        )
    if stage is Stage.finetune and executor.observe().hf_step is None:
        raise FileNotFoundError(f"run {spec.name} has no converted model; run `sobertctl convert {spec.name}`")
    executor.run_stage(stage, step=getattr(args, "step", None))
    return 0
