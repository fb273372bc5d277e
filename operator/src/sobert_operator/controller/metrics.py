"""Prometheus metrics of the controller: each run's spend, budget, forecast, throughput and phase.

Served on SOBERT_METRICS_PORT (default 9090, path /metrics); the chart exposes the port and the
usual `prometheus.io/*` annotations. Values come from the status the controller writes, so the
dashboard and `kubectl get sobertruns -o yaml` never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

PHASES = (
    "Pending",
    "Preparing",
    "Pretraining",
    "Converting",
    "Finetuning",
    "Succeeded",
    "PartiallySucceeded",
    "Failed",
    "BudgetStopped",
)


GAUGES = {
    "spend": ("sobert_run_spend_usd", "Dollars spent by the run so far."),
    "budget": ("sobert_run_budget_usd", "The run's budget (absent: no budget)."),
    "forecast": ("sobert_run_forecast_usd", "The run's forecast total cost."),
    "tokens": ("sobert_run_tokens_per_second", "Latest pretraining throughput."),
}


class RunMetrics:
    """Each run's latest figures, made into gauges when Prometheus scrapes: a custom collector,
    prometheus_client's way for values kept elsewhere (`prometheus_client.registry.Collector`).
    Recording a status is one assignment; with a `Gauge` child per run and phase, each reconcile
    took 13 of them, a lock and a lookup each (4% of the controller's time with 200 runs at once,
    py-spy). A figure the status lacks is absent, and a deleted run's series go with it."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self._latest: dict[str, tuple[dict[str, float | None], str | None]] = {}
        registry.register(self)

    def observe(self, run: str, status: dict[str, Any]) -> None:
        cost = status.get("cost") or {}
        figures = {
            "spend": cost.get("spentUsd"),
            "budget": cost.get("budgetUsd"),
            "forecast": cost.get("forecastUsd"),
            "tokens": (status.get("pretrain") or {}).get("tokensPerSecond"),
        }
        self._latest[run] = figures, status.get("phase")  # one step under the GIL

    def forget(self, run: str) -> None:
        self._latest.pop(run, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        latest = list(self._latest.items())
        for key, (name, documentation) in GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=["run"])
            for run, (figures, _) in latest:
                value = figures[key]
                if value is not None:
                    family.add_metric([run], value)
            yield family
        phases = GaugeMetricFamily("sobert_run_phase", "1 for the run's current phase.", labels=["run", "phase"])
        for run, (_, current) in latest:
            for phase in PHASES:
                phases.add_metric([run, phase], 1 if phase == current else 0)
        yield phases


_metrics = RunMetrics()
_served: list[int] = []


def observe(run: str, status: dict[str, Any]) -> None:
    _metrics.observe(run, status)


def forget(run: str) -> None:
    _metrics.forget(run)


def serve(port: int) -> None:
    """Start the /metrics endpoint (0 disables it, e.g. several controllers in one test process)."""
    if port and port not in _served:  # kopf restarts in one process (tests) must not bind twice
        start_http_server(port)
        _served.append(port)
