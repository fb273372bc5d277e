"""Launch commands rendered from a validated spec (never hand-kept scripts)."""

from __future__ import annotations

from sobert_api.spec import RunSpec


def torchrun_args(spec: RunSpec, *, rdzv_endpoint: str | None = None) -> list[str]:
    """torchrun flags for the spec's layout: standalone on one node, c10d rendezvous across nodes."""
    args = [f"--nproc_per_node={spec.parallel.procs_per_node}", f"--nnodes={spec.parallel.nodes}"]
    if spec.parallel.nodes == 1 and rdzv_endpoint is None:
        args.append("--standalone")
    else:
        args += ["--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}", f"--rdzv_id={spec.name}"]
    return args


def pretrain_command(
    spec: RunSpec, spec_path: str, dataset_id: str, workdir: str, python: str = "python", **torchrun_kwargs
) -> list[str]:
    return [
        python,
        "-m",
        "torch.distributed.run",
        *torchrun_args(spec, **torchrun_kwargs),
        "-m",
        "sobert_trainer.pretrain",
        f"--spec={spec_path}",
        f"--dataset-id={dataset_id}",
        f"--workdir={workdir}",
    ]


def convert_command(spec_path: str, dataset_id: str, python: str = "python") -> list[str]:
    return [python, "-m", "sobert_trainer.convert", f"--spec={spec_path}", f"--dataset-id={dataset_id}"]


def finetune_command(spec_path: str, task: str, python: str = "python") -> list[str]:
    """The driver of one task's Ray Train job (a RayJob entrypoint on Kubernetes)."""
    return [python, "-m", "sobert_trainer.finetune", f"--spec={spec_path}", f"--task={task}"]
