"""Reduce an owned job's status (Job, PyTorchJob, TrainJob, RayJob) to a StageState. Pure functions."""

from __future__ import annotations

from typing import Any

from sobert_operator.pipeline import StageState


def _true_conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (obj.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]


# KubeRay reports no conditions on a RayJob: its jobDeploymentStatus (and the Ray job's own
# jobStatus) say where it is. Retrying means the backoffLimit is not spent yet.
RAYJOB_SUCCEEDED = {"Complete"}
RAYJOB_FAILED = {"Failed", "ValidationFailed"}


def _rayjob_state(status: dict[str, Any]) -> StageState:
    deployment = status.get("jobDeploymentStatus")
    if deployment in RAYJOB_FAILED or (deployment in RAYJOB_SUCCEEDED and status.get("jobStatus") == "FAILED"):
        return StageState.failed
    if deployment in RAYJOB_SUCCEEDED:
        return StageState.succeeded
    return StageState.running


def job_state(obj: dict[str, Any] | None) -> StageState:
    """Batch Job: Complete / Failed; PyTorchJob: Succeeded / Failed; TrainJob: Complete / Failed;
    RayJob: jobDeploymentStatus Complete / Failed."""
    if obj is None:
        return StageState.missing
    if obj.get("kind") == "RayJob":
        return _rayjob_state(obj.get("status") or {})
    types = {c.get("type") for c in _true_conditions(obj)}
    if types & {"Complete", "Succeeded"}:
        return StageState.succeeded
    if "Failed" in types:
        return StageState.failed
    return StageState.running


def failure_message(obj: dict[str, Any]) -> str:
    if obj.get("kind") == "RayJob":
        status = obj.get("status") or {}
        return f"{status.get('reason') or status.get('jobStatus') or 'Failed'}: {status.get('message') or 'no message'}"
    for condition in _true_conditions(obj):
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            return f"{reason}: {condition.get('message') or 'no message'}"
    return "failed"


def job_phase(obj: dict[str, Any] | None) -> str | None:
    """The latest true condition type, for status display (Created, Running, Restarting, ...)."""
    if obj is None:
        return None
    if obj.get("kind") == "RayJob":
        return (obj.get("status") or {}).get("jobDeploymentStatus") or "Pending"
    conditions = _true_conditions(obj)
    return conditions[-1].get("type") if conditions else "Pending"
