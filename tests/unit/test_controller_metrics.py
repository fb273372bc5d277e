"""The controller's Prometheus metrics: each run's latest status, as Prometheus scrapes it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from sobert_operator.controller.metrics import PHASES, RunMetrics


def scraped(registry: CollectorRegistry) -> set[str]:
    return {line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")}


def test_a_scrape_shows_each_runs_latest_figures_and_phase():
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    metrics.observe("a", {"phase": "Preparing", "cost": {"spentUsd": 1.5, "budgetUsd": 100, "forecastUsd": 40.0}})
    metrics.observe("a", {"phase": "Pretraining", "cost": {"spentUsd": 2.5, "forecastUsd": 41.0},
                          "pretrain": {"tokensPerSecond": 9000.0}})  # fmt: skip
    metrics.observe("b", {"phase": "Pending"})
    lines = scraped(registry)
    assert {
        'sobert_run_spend_usd{run="a"} 2.5',
        'sobert_run_forecast_usd{run="a"} 41.0',
        'sobert_run_tokens_per_second{run="a"} 9000.0',
        'sobert_run_phase{phase="Pretraining",run="a"} 1.0',
        'sobert_run_phase{phase="Preparing",run="a"} 0.0',
        'sobert_run_phase{phase="Pending",run="b"} 1.0',
    } <= lines
    assert not any(line.startswith("sobert_run_budget_usd") for line in lines)  # its budget was removed
    assert sum(line.startswith("sobert_run_phase{") for line in lines) == 2 * len(PHASES)


def test_a_forgotten_run_has_no_series():
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    metrics.observe("a", {"phase": "Pending", "cost": {"spentUsd": 0.0}})
    metrics.forget("a")
    assert not any('run="a"' in line for line in scraped(registry))
