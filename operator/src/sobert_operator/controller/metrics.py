"""Prometheus metrics of the controller: each run's spend, budget, forecast, throughput and phase.

Served on SOBERT_METRICS_PORT (default 9090, path /metrics); the chart exposes the port and the
usual `prometheus.io/*` annotations. Values come from the status the controller writes, so the
dashboard and `kubectl get sobertruns -o yaml` never disagree.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, start_http_server

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


class RunMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.spend = Gauge("sobert_run_spend_usd", "Dollars spent by the run so far.", ["run"], registry=registry)
        self.budget = Gauge(
            "sobert_run_budget_usd", "The run's budget (absent: no budget).", ["run"], registry=registry
        )
        self.forecast = Gauge("sobert_run_forecast_usd", "The run's forecast total cost.", ["run"], registry=registry)
        self.tokens = Gauge(
            "sobert_run_tokens_per_second", "Latest pretraining throughput.", ["run"], registry=registry
        )
        self.phase = Gauge("sobert_run_phase", "1 for the run's current phase.", ["run", "phase"], registry=registry)

    def observe(self, run: str, status: dict[str, Any]) -> None:
        cost = status.get("cost") or {}
        if cost.get("spentUsd") is not None:
            self.spend.labels(run).set(cost["spentUsd"])
        if cost.get("budgetUsd") is not None:
            self.budget.labels(run).set(cost["budgetUsd"])
        if cost.get("forecastUsd") is not None:
            self.forecast.labels(run).set(cost["forecastUsd"])
        tokens = (status.get("pretrain") or {}).get("tokensPerSecond")
        if tokens is not None:
            self.tokens.labels(run).set(tokens)
        for phase in PHASES:
            self.phase.labels(run, phase).set(1 if status.get("phase") == phase else 0)


_metrics = RunMetrics()
_served: list[int] = []


def observe(run: str, status: dict[str, Any]) -> None:
    _metrics.observe(run, status)


def serve(port: int) -> None:
    """Start the /metrics endpoint (0 disables it, e.g. several controllers in one test process)."""
    if port and port not in _served:  # kopf restarts in one process (tests) must not bind twice
        start_http_server(port)
        _served.append(port)
