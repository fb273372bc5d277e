"""Reduce an owned job's status (Job, PyTorchJob, TrainJob) to a StageState. Pure functions."""

from __future__ import annotations

from typing import Any

from sobert_operator.pipeline import StageState


def _true_conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (obj.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]


def job_state(obj: dict[str, Any] | None) -> StageState:
    """Batch Job: Complete / Failed; PyTorchJob: Succeeded / Failed; TrainJob: Complete / Failed."""
    if obj is None:
        return StageState.missing
    types = {c.get("type") for c in _true_conditions(obj)}
    if types & {"Complete", "Succeeded"}:
        return StageState.succeeded
    if "Failed" in types:
        return StageState.failed
    return StageState.running


def failure_message(obj: dict[str, Any]) -> str:
    for condition in _true_conditions(obj):
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            return f"{reason}: {condition.get('message') or 'no message'}"
    return "failed"


def job_phase(obj: dict[str, Any] | None) -> str | None:
    """The latest true condition type, for status display (Created, Running, Restarting, ...)."""
    if obj is None:
        return None
    conditions = _true_conditions(obj)
    return conditions[-1].get("type") if conditions else "Pending"
