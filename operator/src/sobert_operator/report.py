"""The per-run budget report: JSON for machines, Markdown for the terminal, HTML with plots for people.

Built from what the run left in storage (spec, forecast, ledger, progress, finetune metrics), so
`sobertctl report RUN` gives the same answer wherever it runs. The Markdown and the HTML render one
view of it (`report_view.py`); the HTML embeds its plots as PNG data URIs and opens offline, with no
script and no external request (`report_html.py`).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sobert_api import paths
from sobert_api.progress import loss_curves, read_progress
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_operator.cost.goodput import goodput
from sobert_operator.cost.ledger import Allocation, spend_series, summarize
from sobert_operator.cost.records import read_eta, read_ledger
from sobert_operator.report_html import render_html, render_plots
from sobert_operator.report_markdown import render_markdown
from sobert_operator.report_view import report_view
from sobert_operator.results import finetune_failures, finetune_metrics, finetune_results


def build_report(spec: RunSpec, storage: Storage, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    ledger = read_ledger(storage, spec.name)
    forecast = storage.read_json_if_exists(paths.forecast_key(spec.name))
    submitted = storage.read_json_if_exists(paths.submit_forecast_key(spec.name))
    records = read_progress(storage, spec.name)
    metrics = finetune_metrics(spec, storage)
    totals = summarize(ledger, now)
    stopped = any(a.reason == "BudgetStopped" for a in ledger)
    return {
        "run": spec.name,
        "preset": spec.preset,
        "generated": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
        "state": "budget-stopped" if stopped else "ok",
        "budget": {
            "usd": spec.budget.usd,
            "warn_fraction": spec.budget.warn_fraction,
            "checkpoint_fraction": spec.budget.checkpoint_fraction,
            "submitted_over_forecast": spec.budget.allow_over_forecast,
        },
        "spent": {
            "usd": totals["usd"],
            "by_phase": totals["by_phase"],
            "device_hours": totals["device_hours"],
        },
        "goodput": goodput(ledger, records, metrics, now),
        "eta": eta_history(read_eta(storage, spec.name), ledger),
        "forecast": forecast,
        "forecast_at_submit": submitted,
        "ledger": [a.as_dict() for a in ledger],
        "spend_series": spend_series(ledger, now, points=100),
        "pretrain": _progress(records),
        "finetune": finetune_results(spec, storage, metrics),
        "finetune_failed": finetune_failures(spec, storage, metrics),
        "prices": _prices(ledger, forecast),
    }


def eta_history(estimates: list[dict[str, Any]], ledger: list[Allocation]) -> dict[str, Any]:
    """Each estimate as (seconds since the run started, stage, progress, seconds left, estimated end
    in seconds since the start), and the actual end once an estimate says the run is done."""
    if not estimates:
        return {"started_at": None, "points": [], "ended_s": None}
    started = min([e["time"] for e in estimates] + [a.start for a in ledger])
    points = [
        {
            "at_s": round(e["time"] - started, 1),
            "stage": (e.get("stage") or {}).get("name"),
            "progress_percent": e["progressPercentage"],
            "remaining_s": e["estimatedRemainingSeconds"],
            "estimated_end_s": round(e["time"] - started + e["estimatedRemainingSeconds"], 1),
        }
        for e in estimates
        if "progressPercentage" in e
    ]
    ended = next((p["at_s"] for p in points if p["stage"] is None and p["remaining_s"] == 0), None)
    return {"started_at": started, "points": points, "ended_s": ended}


def _progress(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not records:
        return None
    last = records[-1]
    return {
        "step": last.get("step"),
        "train_iters": last.get("train_iters"),
        "consumed_tokens": last.get("consumed_tokens"),
        "loss": last.get("loss"),
        "loss_curves": loss_curves(records),
        "median_tokens_per_s": _median(records, "tokens_per_s"),
        "median_real_tokens_per_s": _median(records, "real_tokens_per_s"),
        "real_token_fraction": _median(records, "real_token_fraction"),
        "median_model_tflops_per_s_per_device": _median(records, "model_tflops_per_s_per_device"),
        "median_mfu": _median(records, "mfu"),
    }


def _median(records: list[dict[str, Any]], key: str) -> float | None:
    """The median of a progress field over the records that have it (a checkpoint step's slow
    record does not move it)."""
    values = sorted(r[key] for r in records if isinstance(r.get(key), int | float))
    return values[len(values) // 2] if values else None


def _prices(ledger: list[Allocation], forecast: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Where each price came from: the forecast's devices, and every rate the ledger charged."""
    out = []
    for key in ("train_device", "cpu"):
        device = ((forecast or {}).get("assumptions") or {}).get(key)
        if device:
            out.append({
                "device": device["kind"],
                "usd_per_hour": device["usd_per_hour"],
                "source": device["price_source"],
                "date": device["price_date"],
            })  # fmt: skip
    out = list({(p["device"], p["usd_per_hour"]): p for p in reversed(out)}.values())[::-1]  # each price once
    charged = {(a.device, a.usd_per_hour) for a in ledger}
    known = {(p["device"], p["usd_per_hour"]) for p in out}
    out += [{"device": d, "usd_per_hour": r, "source": "ledger rate", "date": "-"} for d, r in sorted(charged - known)]
    return out


def write_report(spec: RunSpec, storage: Storage, now: float | None = None) -> tuple[dict[str, Any], str]:
    """Build and publish report.json, report.md and report.html under runs/<run>/cost/."""
    report = build_report(spec, storage, now)
    view = report_view(report)
    markdown = render_markdown(view)
    prefix = paths.cost_prefix(spec.name)
    storage.write_json(f"{prefix}/report.json", report)
    storage.write_bytes(f"{prefix}/report.md", markdown.encode())
    storage.write_bytes(f"{prefix}/report.html", render_html(view, render_plots(report)).encode())
    return report, markdown
