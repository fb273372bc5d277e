"""The spend ledger: what each pod (or local process) cost, by phase.

OpenCost's allocation formula: requested devices x running time x the device's price. A pod's
running time is from its start until it ended (a terminated container's finish time, the pod's
deletion) or until now. What the money bought within a phase, and the work a preempted pod threw
away, is `goodput.py`'s. Pure functions over plain records, so recorded pod histories replay exactly
in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sobert_api.timestamps import parse


@dataclass(frozen=True)
class Allocation:
    """One pod's (or process's) claim on priced devices."""

    name: str
    phase: str  # prepare | pretrain | convert | finetune/<task>
    device: str  # GPU type or "cpu"
    devices: float  # requested GPUs (or CPU cores)
    usd_per_hour: float  # per device
    start: float  # unix seconds
    end: float | None = None  # None: still running
    reason: str | None = None  # why it ended (Completed, Preempted, OOMKilled, ...)

    def seconds(self, now: float) -> float:
        return max(0.0, (self.end if self.end is not None else now) - self.start)

    def usd(self, now: float) -> float:
        return self.devices * self.seconds(now) * self.usd_per_hour / 3600

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(allocations: Iterable[Allocation], now: float) -> dict[str, Any]:
    """Totals: spend overall and by phase, and device-hours. (Where the money went within a phase,
    work lost to restarts included, is `goodput.py`'s.)"""
    by_phase: dict[str, float] = {}
    device_hours = 0.0
    for a in allocations:
        by_phase[a.phase] = by_phase.get(a.phase, 0.0) + a.usd(now)
        device_hours += a.devices * a.seconds(now) / 3600
    return {"usd": sum(by_phase.values()), "by_phase": by_phase, "device_hours": device_hours}


def spend_series(allocations: Sequence[Allocation], now: float, points: int = 200) -> list[tuple[float, float]]:
    """(time, cumulative dollars) at evenly spaced instants from the first start to now (for plots)."""
    if not allocations:
        return []
    first = min(a.start for a in allocations)
    last = max([now, *[a.end for a in allocations if a.end is not None]])
    step = (last - first) / max(1, points - 1)
    series = []
    for i in range(points):
        t = first + i * step
        spent = sum(
            a.devices * a.usd_per_hour / 3600 * max(0.0, min(t, a.end if a.end is not None else now) - a.start)
            for a in allocations
        )
        series.append((t, spent))
    return series


def allocation_from_pod(pod: dict[str, Any], device: str, usd_per_hour: float, phase: str) -> Allocation | None:
    """A Kubernetes pod as an Allocation (None until it has started). GPUs from the containers' requests;
    a pod without GPUs is priced per requested CPU core by the caller's `device`/price."""
    status = pod.get("status") or {}
    start = parse(status.get("startTime"))
    if start is None:
        return None
    containers = (pod.get("spec") or {}).get("containers") or []
    requests = [(c.get("resources") or {}).get("requests") or {} for c in containers]
    if device == "cpu":
        devices = sum(_cores(r.get("cpu", "0")) for r in requests)
    else:
        devices = sum(float(r.get("nvidia.com/gpu", 0)) for r in requests)
    finished = [
        parse(((s.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        for s in status.get("containerStatuses") or []
    ]
    terminated = [
        ((s.get("state") or {}).get("terminated") or {}).get("reason") for s in status.get("containerStatuses") or []
    ]
    ends = [t for t in finished if t is not None]
    end = max(ends) if ends and len(ends) == len(containers) else parse(pod["metadata"].get("deletionTimestamp"))
    reason = status.get("reason") or next((r for r in terminated if r and r != "Completed"), None)
    if reason is None and end is not None:
        reason = "Completed"
    return Allocation(pod["metadata"]["name"], phase, device, devices, usd_per_hour, start, end, reason)


def _cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
