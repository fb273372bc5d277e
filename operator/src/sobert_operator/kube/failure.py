"""Which container failed a stage, read from its pods' statuses when the run fails. Pure.

The operators' own failure says which job failed and why in their terms ("1 Master replica(s)
failed"); the container that exited, its exit code and its last log lines say what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sobert_api.stages import ERROR_LINE

LOG_TAIL_LINES = 20
"""How many of the failed container's last log lines go into the run's status."""


@dataclass(frozen=True)
class FailedContainer:
    """A container that ended with a non-zero exit code."""

    pod: str
    container: str
    exit_code: int
    reason: str  # the kubelet's: Error, OOMKilled, ...
    finished_at: str
    previous: bool  # it has restarted since: its log is the previous instance's

    @property
    def permanent(self) -> bool:
        """1-127: the process's own verdict, which the Training Operator's `restartPolicy:
        ExitCode` does not retry (128+ is a signal: preemption, OOM)."""
        return 0 < self.exit_code < 128


def failed_containers(pods: list[dict[str, Any]]) -> list[FailedContainer]:
    """Every terminated container (init containers too, current or before a restart) that exited
    non-zero, in the pods given."""
    found = []
    for pod in pods:
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            for key in ("state", "lastState"):
                ended = (container.get(key) or {}).get("terminated") or {}
                if ended.get("exitCode"):
                    found.append(
                        FailedContainer(
                            pod=pod["metadata"]["name"],
                            container=container["name"],
                            exit_code=int(ended["exitCode"]),
                            reason=ended.get("reason") or "Error",
                            finished_at=ended.get("finishedAt") or "",
                            previous=key == "lastState",
                        )
                    )
    return found


def failures_by_cause(pods: list[dict[str, Any]]) -> list[FailedContainer]:
    """The failed containers, the likeliest cause first: those that exited with a permanent code,
    earliest first, then the rest, latest first (a stage retried until its limit: its latest
    attempt)."""
    found = failed_containers(pods)

    def by_time(c: FailedContainer) -> tuple[str, str, str]:
        return c.finished_at, c.pod, c.container

    permanent = sorted((c for c in found if c.permanent), key=by_time)
    return permanent + sorted((c for c in found if not c.permanent), key=by_time, reverse=True)


def first_with_log(
    candidates: list[FailedContainer], read_log: Callable[[FailedContainer], str | None]
) -> tuple[FailedContainer, str | None] | None:
    """The first candidate whose log can be read, with it; else the first, without one.

    Ranks that fail together race the operator's cleanup: the Training Operator deletes the pods it
    still saw running when the job failed (`cleanPodPolicy: Running`), so the earliest failure's
    pod may be gone by the time its log is asked for, while a peer's that said the same remains.
    `read_log` returns None when it cannot read one."""
    for candidate in candidates:
        log = read_log(candidate)
        if log is not None:
            return candidate, log
    return (candidates[0], None) if candidates else None


def failure_status(container: FailedContainer, log_tail: str | None) -> dict[str, Any]:
    """`.status.failure`: where the stage failed and what the container said last."""
    return {
        "pod": container.pod,
        "container": container.container,
        "exitCode": container.exit_code,
        "reason": container.reason,
        "finishedAt": container.finished_at or None,
        "logTail": log_tail,
    }


def last_error_line(log_tail: str | None) -> str | None:
    """The stage's own error message (`error: ...`, the stage protocol's ERROR_LINE), if it printed one."""
    lines = [line.strip() for line in (log_tail or "").splitlines() if line.strip().startswith(ERROR_LINE)]
    return lines[-1] if lines else None
