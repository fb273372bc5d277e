"""Launch commands rendered from a validated spec (never hand-kept scripts)."""

from __future__ import annotations

from enum import StrEnum

from sobert_api.spec import RunSpec

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
    """torchrun (through `sobert_trainer.torchrun`, for exit codes an orchestrator can act on) over
    the pretraining entry point; `grace_seconds` is the time from SIGTERM to SIGKILL; `peak_tflops`
    (each device's dense BF16 peak) makes the trainer report MFU."""
    return [
        python,
        "-m",
        "sobert_trainer.torchrun",
        f"--grace-seconds={grace_seconds}",
        *torchrun_args(spec, target),
        "-m",
        "sobert_trainer.pretrain",
        f"--spec={spec_path}",
        f"--dataset-id={dataset_id}",
        f"--workdir={workdir}",
        *([f"--peak-tflops={peak_tflops:g}"] if peak_tflops else []),
    ]


def convert_command(spec_path: str, dataset_id: str, python: str = "python") -> list[str]:
    return [python, "-m", "sobert_trainer.convert", f"--spec={spec_path}", f"--dataset-id={dataset_id}"]


def finetune_command(spec_path: str, task: str, python: str = "python") -> list[str]:
    """The driver of one task's Ray Train job (a RayJob entrypoint on Kubernetes)."""
    return [python, "-m", "sobert_trainer.finetune", f"--spec={spec_path}", f"--task={task}"]
