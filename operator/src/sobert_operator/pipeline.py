"""What runs next, given what has been observed: pure functions shared by both executors.

The local executor observes its storage prefix; the Kubernetes controller observes its owned
jobs and the same storage. Both ask `next_stage` and run what it names, so a run interrupted at
any point continues from the first stage whose output is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sobert_api.spec import RunSpec


class Stage(StrEnum):
    prepare = "prepare"
    pretrain = "pretrain"
    convert = "convert"


STAGE_ORDER = (Stage.prepare, Stage.pretrain, Stage.convert)


@dataclass(frozen=True)
class Observed:
    """What exists for a run (each flag is read from a published manifest, never a partial file)."""

    dataset_published: bool = False
    checkpoint_step: int | None = None  # newest complete checkpoint
    hf_step: int | None = None  # step the published HF model was converted from


def stage_done(stage: Stage, spec: RunSpec, observed: Observed) -> bool:
    if stage is Stage.prepare:
        return observed.dataset_published
    if stage is Stage.pretrain:
        return observed.checkpoint_step is not None and observed.checkpoint_step >= spec.train_iters
    return observed.hf_step is not None and observed.hf_step == observed.checkpoint_step


def next_stage(spec: RunSpec, observed: Observed) -> Stage | None:
    """The first stage whose output is missing; None when the run is complete."""
    for stage in STAGE_ORDER:
        if not stage_done(stage, spec, observed):
            return stage
    return None
