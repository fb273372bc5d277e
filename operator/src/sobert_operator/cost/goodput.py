"""Goodput and badput in dollars: where a run's money went, by phase.

The categories follow Google's ml-goodput-measurement (`goodput.py`, BadputType): productive time
against program start-up, checkpoint restore, waiting for data, checkpoint save and work lost to
restarts (`WASTED_PROGRESS_FROM_DISRUPTION`), plus three a dollar budget cares about: pretraining's
validation-loss evaluations, a Ray cluster idling after its job ended (until its TTL removes it)
and padding (the step time spent on padding tokens, from the real-token fraction). `other` is what
no clock accounts for: pod scheduling, image pulls, the time after a process's last progress record.

- **pretrain**: the training processes' time accounts from progress.jsonl
  (`sobert_trainer.pretrain.goodput_clock`), summed over the processes that ran (a resumed run has
  several), as shares of the phase's wall time (the union of its pods' lifetimes) and so of its
  dollars. The work lost to a restart is the steps a process ran past the checkpoint its successor
  resumed from, at that process's mean step time.
- **finetune/<task>**: each pod's time split at the task's `started_at` and `finished_at`
  (metrics.json): start-up before, productive between (less padding, from each epoch's real-token
  fraction: batches are padded to their longest member), idle cluster after.
- **prepare**, **convert**: their phase's own work, productive.

Pure: the same ledger, progress and metrics give the same figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sobert_operator.cost.ledger import Allocation

CATEGORIES = (
    "productive",
    "padding",
    "startup",
    "checkpoint_restore",
    "data_wait",
    "checkpoint_save",
    "evaluation",
    "lost_to_restarts",
    "idle_cluster",
    "other",
)
BADPUT = CATEGORIES[1:]


def goodput(
    ledger: Sequence[Allocation],
    progress: Sequence[dict[str, Any]],
    finetune: dict[str, dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """Dollars per category for the run and for each phase, and the run's goodput fraction.
    `finetune`: task -> its metrics.json (those that finished)."""
    by_phase: dict[str, dict[str, float]] = {}
    for phase in dict.fromkeys(a.phase for a in ledger):
        allocations = [a for a in ledger if a.phase == phase]
        if phase == "pretrain":
            by_phase[phase] = _pretrain(allocations, progress, now)
        elif phase.startswith("finetune/"):
            by_phase[phase] = _finetune(allocations, finetune.get(phase.split("/", 1)[1]), now)
        else:
            by_phase[phase] = _zero() | {"productive": sum(a.usd(now) for a in allocations)}
    run = _zero()
    for figures in by_phase.values():
        for category, usd in figures.items():
            run[category] += usd
    total = sum(run.values())
    return {
        "categories": list(CATEGORIES),
        "run": run,
        "by_phase": by_phase,
        "goodput_fraction": run["productive"] / total if total else None,
        "badput_usd": total - run["productive"],
    }


def _zero() -> dict[str, float]:
    return dict.fromkeys(CATEGORIES, 0.0)


def _pretrain(allocations: Sequence[Allocation], progress: Sequence[dict[str, Any]], now: float) -> dict[str, float]:
    usd = sum(a.usd(now) for a in allocations)
    wall = _union_seconds([(a.start, a.end if a.end is not None else now) for a in allocations])
    seconds = pretrain_seconds(progress)
    accounted = sum(seconds.values())
    seconds["other"] = max(0.0, wall - accounted)
    scale = usd / max(wall, accounted) if max(wall, accounted) > 0 else 0.0
    return _zero() | {category: s * scale for category, s in seconds.items()}


def pretrain_seconds(progress: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The training processes' time accounts summed, in goodput categories (seconds; no `other`)."""
    processes: dict[float, dict[str, Any]] = {}  # process start -> its last record
    fractions = []
    for record in progress:
        if record.get("process_started_at") is None:
            continue  # written before records carried time accounts
        processes[record["process_started_at"]] = record
        if isinstance(record.get("real_token_fraction"), int | float):
            fractions.append(record["real_token_fraction"])
    ordered = [processes[t] for t in sorted(processes)]
    lost = 0.0
    for record, successor in itertools.pairwise(ordered):
        done = record["step"] - record["resumed_from"]
        if done > 0:
            lost += max(0, record["step"] - successor["resumed_from"]) * record["train_step_s"] / done
    stepping = sum(r["train_step_s"] - r["data_wait_s"] for r in ordered) - lost
    real = sum(fractions) / len(fractions) if fractions else 1.0
    return {
        "productive": max(0.0, stepping) * real,
        "padding": max(0.0, stepping) * (1 - real),
        "startup": sum((r["startup_s"] or 0.0) - r["restore_s"] for r in ordered),
        "checkpoint_restore": sum(r["restore_s"] for r in ordered),
        "data_wait": sum(r["data_wait_s"] for r in ordered),
        "checkpoint_save": sum(r["checkpoint_save_s"] for r in ordered),
        "evaluation": sum(r.get("evaluation_s", 0.0) for r in ordered),  # records from before it lack it
        "lost_to_restarts": lost,
    }


def _finetune(allocations: Sequence[Allocation], metrics: dict[str, Any] | None, now: float) -> dict[str, float]:
    figures = _zero()
    fractions = [e["real_token_fraction"] for e in (metrics or {}).get("history", []) if "real_token_fraction" in e]
    real = sum(fractions) / len(fractions) if fractions else 1.0  # batches padded to their longest member
    for a in allocations:
        end = a.end if a.end is not None else now
        rate = a.devices * a.usd_per_hour / 3600
        if metrics is None or metrics.get("started_at") is None:
            figures["other"] += rate * (end - a.start)  # not finished (or from before tasks were timed)
            continue
        began, finished = metrics["started_at"], metrics["finished_at"]
        working = rate * max(0.0, min(end, finished) - max(a.start, began))
        figures["startup"] += rate * max(0.0, min(end, began) - a.start)
        figures["productive"] += working * real
        figures["padding"] += working * (1 - real)
        figures["idle_cluster"] += rate * max(0.0, end - max(a.start, finished))
    return figures


def _union_seconds(spans: Sequence[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total
