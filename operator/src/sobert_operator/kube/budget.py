"""The controller's side of the budget: a ledger from the run's pods, and what the policy does.

Pure functions; the handler fetches pods and storage, calls them, applies the result. Pods are
priced as OpenCost does (requested GPUs, or CPU cores for CPU pods, x running time x the pool's
price); ended pods go to the run's ledger in storage (`cost/meter.py`), because pods do not outlive
their jobs' TTL but the money they cost does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig
from sobert_operator.cost.catalog import PriceCatalog
from sobert_operator.cost.devices import run_devices
from sobert_operator.cost.ledger import Allocation, allocation_from_pod
from sobert_operator.cost.policy import BudgetAction, budget_action, seconds_left
from sobert_operator.render.common import LABEL_STAGE
from sobert_operator.render.finetune import LABEL_TASK

# Where each kind keeps its suspend switch (Kubeflow v1 runPolicy; Trainer v2 and KubeRay spec).
SUSPEND_PATCH = {
    "PyTorchJob": lambda on: {"spec": {"runPolicy": {"suspend": on}}},
    "TrainJob": lambda on: {"spec": {"suspend": on}},
    "RayJob": lambda on: {"spec": {"suspend": on}},
}


def pod_phase(pod: dict[str, Any]) -> str:
    labels = pod["metadata"].get("labels") or {}
    stage = labels.get(LABEL_STAGE, "unknown")
    return f"{stage}/{labels[LABEL_TASK]}" if stage == "finetune" and LABEL_TASK in labels else stage


def gpu_price(spec: RunSpec, cluster: ClusterConfig, catalog: PriceCatalog) -> tuple[str, float]:
    """(GPU type, $/GPU-hour) of the run's node pool: the device the forecast prices too."""
    device = run_devices(spec, catalog, cluster)[0]
    return device.kind, device.usd_per_hour


def pod_allocations(
    pods: list[dict[str, Any]], spec: RunSpec, cluster: ClusterConfig, catalog: PriceCatalog
) -> list[Allocation]:
    """Each started pod as an allocation: GPU pods at the pool's GPU price, others per core."""
    gpu, price = gpu_price(spec, cluster, catalog)
    out = []
    for pod in pods:
        requests = [
            (c.get("resources") or {}).get("requests") or {} for c in (pod.get("spec") or {}).get("containers") or []
        ]
        uses_gpu = any(float(r.get("nvidia.com/gpu", 0)) > 0 for r in requests)
        allocation = (
            allocation_from_pod(pod, gpu, price, pod_phase(pod))
            if uses_gpu
            else allocation_from_pod(pod, "cpu", catalog.cpu.usd_per_core_hour, pod_phase(pod))
        )
        if allocation is not None:
            out.append(allocation)
    return out


def vanished_allocations(open_pods: dict[str, dict[str, Any]], live: list[Allocation]) -> list[Allocation]:
    """Pods last seen running that are gone now (a Ray cluster deleted after its TTL, a pod removed
    between two looks): ended when they were last seen, so the ledger covers them until then."""
    seen = {a.name for a in live}
    fields = set(Allocation.__dataclass_fields__)
    return [
        Allocation(
            **{**{k: v for k, v in record.items() if k in fields}, "end": record["lastSeen"], "reason": "Deleted"}
        )
        for name, record in open_pods.items()
        if name not in seen
    ]


def open_pods(live: list[Allocation], now: float) -> dict[str, dict[str, Any]]:
    """The running allocations, kept in the run's status so one that vanishes can still be closed."""
    return {a.name: {**a.as_dict(), "lastSeen": round(now, 3)} for a in live if a.end is None}


def accrued_since_priced(live: list[Allocation], open_pods: dict[str, dict[str, Any]], now: float) -> float:
    """Dollars the running pods have cost since the spend was last priced (each one's `lastSeen`
    in `open_pods`; a pod not seen before, since its start). Added to the last figure while the
    storage holding the ledger cannot be read, so the budget keeps being enforced meanwhile; the
    ledger, read again, then prices everything exactly (ended pods' last seconds included)."""
    usd = 0.0
    for allocation in live:
        if allocation.end is None:
            since = max(allocation.start, float(open_pods.get(allocation.name, {}).get("lastSeen", allocation.start)))
            usd += allocation.devices * allocation.usd_per_hour * max(0.0, now - since) / 3600
    return usd


@dataclass
class BudgetStep:
    action: BudgetAction
    cost_status: dict[str, Any]
    conditions: list[tuple[str, bool, str, str]] = field(default_factory=list)  # type, status, reason, message
    # (reason, message) of each threshold crossed since the last step, in order: one resync may
    # cross several (a budget cut, a slow resync), and each is told.
    events: list[tuple[str, str]] = field(default_factory=list)
    request_checkpoint: bool = False
    suspend: bool | None = None  # True: suspend the running jobs; False: resume them; None: leave


def budget_step(
    spec: RunSpec, spent: float, forecast_usd: float | None, burn_usd_per_hour: float, previous: dict[str, Any]
) -> BudgetStep:
    """What to do now, given the spend; `previous` is the run's last `status.cost`."""
    action = budget_action(spent, spec.budget)
    was = BudgetAction(previous.get("action", "ok"))
    budget = spec.budget.usd
    cost = {
        "spentUsd": round(spent, 6),
        "budgetUsd": budget,
        "forecastUsd": None if forecast_usd is None else round(forecast_usd, 4),
        "burnUsdPerHour": round(burn_usd_per_hour, 4),
        "secondsLeft": seconds_left(spent, spec.budget, burn_usd_per_hour),
        "action": action.value,
        "checkpointRequested": previous.get("checkpointRequested", False) and action is not BudgetAction.ok,
    }
    step = BudgetStep(action, cost)
    if budget is None:
        return step
    share = f"${spent:,.2f} of ${budget:,.2f} ({spent / budget:.0%})"
    if action is BudgetAction.ok:
        if was is BudgetAction.stop:
            step.suspend = False
            step.events.append(("BudgetRaised", f"budget raised: {share}; resuming"))
        return step
    step.conditions.append(("BudgetWarning", True, "BudgetThreshold", f"spent {share}"))
    if was is BudgetAction.ok:
        step.events.append(("BudgetWarning", f"spent {share}"))
    if action in (BudgetAction.checkpoint, BudgetAction.stop) and not cost["checkpointRequested"]:
        step.request_checkpoint, cost["checkpointRequested"] = True, True
        step.events.append(("BudgetCheckpoint", f"spent {share}; asked pretraining to checkpoint"))
    if action is BudgetAction.stop:
        step.suspend = True
        step.conditions.append(("BudgetExceeded", True, "BudgetExceeded", f"spent {share}; jobs suspended"))
        if was is not BudgetAction.stop:
            step.events.append(("BudgetExceeded", f"spent {share}; suspending the run's jobs"))
    return step
