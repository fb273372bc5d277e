"""Progress and time to completion of a run and of its current stage.

The fields are the ones Kubeflow's KEP-2779 ("Track TrainJob progress and expose training metrics",
kubeflow/trainer docs/proposals/2779-trainjob-progress) gives a TrainJob's trainer status:
`progressPercentage` (0-100) and `estimatedRemainingSeconds`, with `lastUpdatedTime`; sobert
reports them for the whole run and for its current stage.

- Pretraining: progress is steps done over steps planned; the time left is the steps left at the
  newest record's throughput (global batch tokens over tokens/s).
- Any other stage: its forecast seconds (`Forecast.phases`) against the time since it started.
  On a cluster finetune tasks run side by side (one RayJob each), so the stage lasts as long as its
  longest task; the local executor runs them one after another (`parallel_tasks=False`).
- The run: what the current stage has left plus the forecast seconds of the stages not started;
  its progress is the time since the run started over that time plus the time left.

Pure: the callers (the controller, the local executor) say which stages ran when.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sobert_api.timestamps import rfc3339

STAGES = ("prepare", "pretrain", "convert", "finetune")


@dataclass(frozen=True)
class PhaseState:
    phase: str  # prepare | pretrain | convert | finetune/<task>
    state: str  # pending | running | done
    started_at: float | None = None  # unix seconds, when running

    @property
    def stage(self) -> str:
        return self.phase.split("/", 1)[0]


def estimate(
    phases: list[PhaseState],
    forecast: dict[str, Any] | None,
    pretrain: dict[str, Any] | None,
    batch_tokens: int,
    run_started_at: float,
    now: float,
    parallel_tasks: bool = True,
) -> dict[str, Any]:
    """The run's and the current stage's progress and time left. `pretrain`: the newest progress
    record (step, train_iters, tokens_per_s); `batch_tokens`: tokens per step."""
    seconds = {p["phase"]: float(p["seconds"]) for p in (forecast or {}).get("phases", [])}
    current = next((s for s in STAGES if any(p.stage == s and p.state != "done" for p in phases)), None)
    elapsed = max(0.0, now - run_started_at)
    out: dict[str, Any] = {"lastUpdatedTime": rfc3339(now)}
    if current is None:
        return out | {"progressPercentage": 100, "estimatedRemainingSeconds": 0, "stage": None}
    mine = [p for p in phases if p.stage == current and p.state != "done"]
    combine = max if parallel_tasks else sum
    stage_left = combine(_left(p, seconds, pretrain, batch_tokens, now) for p in mine)
    stage_elapsed = max((now - p.started_at for p in mine if p.started_at is not None), default=0.0)
    if current == "pretrain" and pretrain and pretrain.get("train_iters"):
        stage_percent = 100 * pretrain["step"] / pretrain["train_iters"]
    else:
        stage_percent = 100 * stage_elapsed / (stage_elapsed + stage_left) if stage_elapsed + stage_left else 0
    later = STAGES[STAGES.index(current) + 1 :]
    pending = sum(combine([seconds.get(p.phase, 0.0) for p in phases if p.stage == s] or [0.0]) for s in later)
    left = stage_left + pending
    return out | {
        "progressPercentage": _percent(100 * elapsed / (elapsed + left) if elapsed + left else 0),
        "estimatedRemainingSeconds": round(left),
        "stage": {
            "name": current,
            "progressPercentage": _percent(stage_percent),
            "estimatedRemainingSeconds": round(stage_left),
        },
    }


def _left(phase: PhaseState, seconds: dict[str, float], pretrain: dict[str, Any] | None, batch_tokens: int,
          now: float) -> float:  # fmt: skip
    forecast = seconds.get(phase.phase, 0.0)
    if phase.stage == "pretrain" and pretrain and pretrain.get("tokens_per_s"):
        return max(0, pretrain["train_iters"] - pretrain["step"]) * batch_tokens / pretrain["tokens_per_s"]
    if phase.state != "running" or phase.started_at is None:
        return forecast
    return max(0.0, forecast - (now - phase.started_at))


def _percent(value: float) -> int:
    return max(0, min(100, int(value)))
