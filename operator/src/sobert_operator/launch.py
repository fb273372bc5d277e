"""Launch commands rendered from a validated spec (never hand-kept scripts): the trainer's entry
points and flags are the contract's (`sobert_api.stages`), run by `python`."""

from __future__ import annotations

import importlib.util
import sys
from enum import StrEnum

from sobert_api import stages
from sobert_api.spec import RunSpec

TRAINER_PACKAGE = "sobert_trainer"
TRAINER_DISTRIBUTION = "sobert-trainer"


class TrainerMissingError(RuntimeError):
    """A command runs trainer stages and this Python has no trainer package (the controller's
    image, or an install of the operator alone)."""


def require_trainer(command: str) -> None:
    """Raise TrainerMissingError naming `command` and what to install when the trainer is absent:
    before anything is started or written, not as a stage's ModuleNotFoundError."""
    if importlib.util.find_spec(TRAINER_PACKAGE) is None:
        raise TrainerMissingError(
            f"{command} runs the trainer ({TRAINER_PACKAGE}), which is not installed in this Python "
            f"({sys.executable}): install the {TRAINER_DISTRIBUTION!r} package (`pip install ./api ./trainer` "
            "from a checkout, or `make setup`), or run the command in the trainer image"
        )


# How long pretraining gets to checkpoint after SIGTERM when it runs on this machine (Ctrl-C, a
# budget stop); on a cluster it is the pod's terminationGracePeriodSeconds.
LOCAL_GRACE_SECONDS = 300


class LaunchTarget(StrEnum):
    """Where a torchrun command runs: decides where its rendezvous comes from."""

    local = "local"  # one machine: --standalone (a private c10d rendezvous on localhost)
    cluster = "cluster"  # a pod per node: static rendezvous from the operator's PET_* variables


def torchrun_args(spec: RunSpec, target: LaunchTarget) -> list[str]:
    """torchrun flags for the spec's layout.

    On a cluster there are no rendezvous flags: an explicit flag beats the `PET_*` variable of the
    same name, so `--rdzv_endpoint` or `--standalone` would override what the Training Operator
    (PET_MASTER_ADDR, PET_MASTER_PORT, PET_NODE_RANK) or Trainer v2's torch plugin injects, and
    torchrun's default static rendezvous reads exactly those.
    """
    args = [f"--nproc-per-node={spec.parallel.procs_per_node}", f"--nnodes={spec.parallel.nodes}"]
    if target is LaunchTarget.local:
        if spec.parallel.nodes != 1:
            raise ValueError(
                f"parallel.nodes ({spec.parallel.nodes}): a local launch runs on one machine; "
                "multi-node pretraining needs --backend kubernetes"
            )
        args.append("--standalone")
    return args


def pretrain_command(
    spec: RunSpec,
    spec_path: str,
    dataset_id: str,
    workdir: str,
    *,
    target: LaunchTarget,
    grace_seconds: int,
    python: str = "python",
    peak_tflops: float | None = None,
) -> list[str]:
    """torchrun (through the trainer's wrapper, for exit codes an orchestrator can act on) over the
    pretraining entry point; `grace_seconds` is the time from SIGTERM to SIGKILL; `peak_tflops`
    (each device's dense BF16 peak) makes the trainer report MFU."""
    return [
        python,
        *stages.torchrun_launcher_args(grace_seconds),
        *torchrun_args(spec, target),
        *stages.pretrain_args(spec_path, dataset_id, workdir, peak_tflops),
    ]


def prepare_command(spec_path: str, dataset_id: str, python: str = "python") -> list[str]:
    return [python, *stages.prepare_args(spec_path, dataset_id)]


def convert_command(spec_path: str, dataset_id: str, python: str = "python", step: int | None = None) -> list[str]:
    return [python, *stages.convert_args(spec_path, dataset_id, step)]


def finetune_command(spec_path: str, task: str, python: str = "python") -> list[str]:
    """The driver of one task's Ray Train job (a RayJob entrypoint on Kubernetes)."""
    return [python, *stages.finetune_args(spec_path, task)]
