"""What runs next, given what has been observed: pure functions shared by both executors.

Each executor reduces what it sees to one `StageState` per stage: the local executor from
published manifests in storage, the Kubernetes controller from its owned jobs' conditions (and
the same manifests). `decide` then says what to do. A run interrupted anywhere continues from
the first stage that has not succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from sobert_api.spec import RunSpec


class Stage(StrEnum):
    prepare = "prepare"
    pretrain = "pretrain"
    convert = "convert"
    finetune = "finetune"  # one job per task listed in spec.finetune.tasks


STAGE_ORDER = (Stage.prepare, Stage.pretrain, Stage.convert, Stage.finetune)


class StageState(StrEnum):
    missing = "missing"  # not started (no job, no output)
    running = "running"  # a job exists and has not finished
    succeeded = "succeeded"
    failed = "failed"
    # Some of the stage's jobs failed and the others succeeded (finetune: by task), none left running.
    partial = "partial"


@dataclass(frozen=True)
class Decision:
    action: Literal["start", "wait", "done", "fail", "partial"]
    stage: Stage | None = None


@dataclass(frozen=True)
class Observed:
    """What storage holds for a run (each flag read from a published manifest, never a partial file)."""

    dataset_published: bool = False
    checkpoint_step: int | None = None  # newest complete checkpoint
    hf_step: int | None = None  # step the published HF model was converted from
    finetuned: frozenset[str] = frozenset()  # tasks whose metrics.json is for the current HF model

    def missing_tasks(self, spec: RunSpec) -> list[str]:
        """Tasks of the spec without results for the current converted model, in spec order."""
        return [task.value for task in spec.finetune.tasks if task.value not in self.finetuned]

    def done(self, spec: RunSpec, stage: Stage, task: str | None = None) -> bool:
        """The stage's outputs (one task's, for finetune with `task`) are published."""
        if stage is Stage.prepare:
            return self.dataset_published
        if stage is Stage.pretrain:
            return self.checkpoint_step is not None and self.checkpoint_step >= spec.train_iters
        if stage is Stage.convert:
            return self.hf_step is not None and self.hf_step == self.checkpoint_step
        return task in self.finetuned if task is not None else not self.missing_tasks(spec)

    def stage_states(self, spec: RunSpec) -> dict[Stage, StageState]:
        return {stage: StageState.succeeded if self.done(spec, stage) else StageState.missing for stage in STAGE_ORDER}


def combine(states: list[StageState]) -> StageState:
    """One state for a stage made of several jobs (finetune: one per task). It ends when every
    job has: a failed task does not stop the others, and the stage is `partial` when some
    succeeded."""
    if StageState.running in states:
        return StageState.running
    if StageState.failed in states:
        return StageState.partial if StageState.succeeded in states else StageState.failed
    if states and all(state is StageState.succeeded for state in states):
        return StageState.succeeded
    return StageState.missing


def decide(states: Mapping[Stage, StageState]) -> Decision:
    """Start the first stage that has not succeeded, wait on a running one, stop on a failure.
    A partial stage ends the run as a partial success when it is the last (finetune), and as a
    failure before it (a later stage needs all of its outputs)."""
    for stage in STAGE_ORDER:
        state = states.get(stage, StageState.missing)
        if state is StageState.succeeded:
            continue
        if state is StageState.partial and stage is STAGE_ORDER[-1]:
            return Decision("partial", stage)
        if state in (StageState.failed, StageState.partial):
            return Decision("fail", stage)
        if state is StageState.running:
            return Decision("wait", stage)
        return Decision("start", stage)
    return Decision("done")


def next_stage(spec: RunSpec, observed: Observed) -> Stage | None:
    """The local executor's view: the first stage whose output is missing."""
    decision = decide(observed.stage_states(spec))
    return decision.stage if decision.action == "start" else None
