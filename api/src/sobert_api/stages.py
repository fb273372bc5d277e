"""What crosses the process boundary between an orchestrator and a trainer stage, named once.

Every stage runs as a process of the trainer package (`python -m <entry point> <flags>`), started
by the local executor, by `sobertctl data prepare` / `eval`, or by the pods of the jobs the
controller renders. Neither side imports the other: they agree through this module on
- the entry points and their flags (the `*_args` builders; each trainer entry point parses exactly
  these, checked by tests/unit/test_stage_protocol.py),
- the exit codes, which the Kubeflow Training Operator's `restartPolicy: ExitCode` acts on,
- the lines a stage prints that an executor reads.
"""

from __future__ import annotations

import re
import signal
from enum import StrEnum


class EntryPoint(StrEnum):
    """The trainer's process entry points (`python -m <value>`)."""

    prepare = "sobert_trainer.data"
    pretrain = "sobert_trainer.pretrain"
    convert = "sobert_trainer.convert"
    finetune = "sobert_trainer.finetune"
    evaluate = "sobert_trainer.finetune.evaluate"
    # torchrun with exit codes an orchestrator can act on, wrapping `pretrain` on every node
    torchrun = "sobert_trainer.torchrun"


# Exit codes. 1-127 are permanent for the Training Operator's `restartPolicy: ExitCode`
# (`IsRetryableExitCode`, training-operator v1.9.3 pkg/util/train/train_util.go); 128+ are retried.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# "Checkpointed on SIGTERM, restart me": 128 + SIGTERM, what a process killed by SIGTERM reports.
EXIT_PREEMPTED = 128 + signal.SIGTERM
# "A peer went away mid-collective (its node crashed or was lost): restart us all": 128 + SIGHUP,
# the signal of a lost connection. Retried, where a rank's own crash (1) is not.
EXIT_PEER_LOST = 128 + signal.SIGHUP

# Lines on a stage's stdout that an executor reads.
STEP_LINE = "pretrain step"  # one per logged pretraining step: "pretrain step 7/40 loss ..."
PREEMPTED_LINE = "pretrain: SIGTERM received; checkpointed"  # followed by " step N, exiting"
ERROR_LINE = "error:"  # a stage's own message when it exits EXIT_BAD_INPUT or EXIT_FAILED
# Lines worth showing a person watching a local run (the rest is in the stage's log).
HEADLINE_PREFIXES = (STEP_LINE, "pretrain:", "finetune ", ERROR_LINE)
# The trainer's log format: "2026-12-04 10:00:00,123 INFO sobert_trainer.pretrain.train: message".
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRAINER_INFO_LINE = re.compile(r"^\S+ \S+ INFO sobert_trainer\.[\w.]+: ")


def _module(entry: EntryPoint) -> list[str]:
    return ["-m", entry.value]


def prepare_args(spec_path: str, dataset_id: str, *, force: bool = False) -> list[str]:
    """Prepare the dataset of the spec's `data` section and publish it as `dataset_id`; `force`
    rebuilds a dataset that is already published."""
    return [*_module(EntryPoint.prepare), f"--spec={spec_path}", f"--dataset-id={dataset_id}"] + (
        ["--force"] if force else []
    )


def pretrain_args(spec_path: str, dataset_id: str, workdir: str, peak_tflops: float | None = None) -> list[str]:
    """One node's pretraining process (under torchrun); `workdir` is node-local scratch;
    `peak_tflops` (each device's dense BF16 peak) makes it report MFU."""
    return [
        *_module(EntryPoint.pretrain),
        f"--spec={spec_path}",
        f"--dataset-id={dataset_id}",
        f"--workdir={workdir}",
        *([f"--peak-tflops={peak_tflops:g}"] if peak_tflops else []),
    ]


def convert_args(spec_path: str, dataset_id: str, step: int | None = None) -> list[str]:
    """Convert the newest complete checkpoint (or `step`'s) to a Hugging Face model."""
    return [*_module(EntryPoint.convert), f"--spec={spec_path}", f"--dataset-id={dataset_id}"] + (
        [f"--step={step}"] if step is not None else []
    )


def finetune_args(spec_path: str, task: str) -> list[str]:
    """The driver of one task's Ray Train job (a RayJob's entrypoint on Kubernetes)."""
    return [*_module(EntryPoint.finetune), f"--spec={spec_path}", f"--task={task}"]


def evaluate_args(spec_path: str, task: str, split: str, uri: str) -> list[str]:
    """Score `task`'s finetuned model on the held-out file `uri`, written to storage as `split`."""
    return [*_module(EntryPoint.evaluate), f"--spec={spec_path}", f"--task={task}", f"--split={split}", f"--uri={uri}"]


GRACE_FLAG = "--grace-seconds="


def torchrun_launcher_args(grace_seconds: int) -> list[str]:
    """The torchrun wrapper; `grace_seconds` is the time from SIGTERM to SIGKILL (the pod's
    terminationGracePeriodSeconds). torchrun's own flags and the worker's module follow."""
    return [*_module(EntryPoint.torchrun), f"{GRACE_FLAG}{grace_seconds}"]
