"""The per-run budget report: JSON for machines, Markdown for the terminal, HTML with plots for people.

Built from what the run left in storage (spec, forecast, ledger, progress, finetune metrics), so
`sobertctl report RUN` gives the same answer wherever it runs. The HTML embeds its plots as PNG
data URIs: it opens offline, with no script and no external request.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import time
from typing import Any

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_operator.cost.ledger import Allocation, spend_series, summarize
from sobert_operator.cost.money import usd
from sobert_operator.cost.records import read_ledger
from sobert_operator.results import finetune_results
from sobert_trainer.storage import Storage


def build_report(spec: RunSpec, storage: Storage, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    ledger = read_ledger(storage, spec.name)
    forecast = _read(storage, paths.forecast_key(spec.name))
    submitted = _read(storage, paths.submit_forecast_key(spec.name))
    progress = _progress(storage, spec.name)
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
            "lost_work_usd": totals["lost_work_usd"],
        },
        "forecast": forecast,
        "forecast_at_submit": submitted,
        "ledger": [a.as_dict() for a in ledger],
        "spend_series": spend_series(ledger, now, points=100),
        "pretrain": progress,
        "finetune": finetune_results(spec, storage),
        "prices": _prices(ledger, forecast),
    }


def _read(storage: Storage, key: str) -> dict[str, Any] | None:
    return storage.read_json(key) if storage.exists(key) else None


def _progress(storage: Storage, run: str) -> dict[str, Any] | None:
    key = paths.progress_key(run)
    if not storage.exists(key):
        return None
    records = [json.loads(line) for line in storage.read_bytes(key).decode().splitlines() if line.strip()]
    if not records:
        return None
    last = records[-1]
    return {
        "step": last.get("step"),
        "train_iters": last.get("train_iters"),
        "consumed_tokens": last.get("consumed_tokens"),
        "loss": last.get("loss"),
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
    charged = {(a.device, a.usd_per_hour) for a in ledger}
    known = {(p["device"], p["usd_per_hour"]) for p in out}
    out += [{"device": d, "usd_per_hour": r, "source": "ledger rate", "date": "-"} for d, r in sorted(charged - known)]
    return out


def render_markdown(report: dict[str, Any]) -> str:
    budget, spent, forecast = report["budget"], report["spent"], report["forecast"] or {}
    lines = [
        f"# Budget report: run {report['run']} ({report['preset']})",
        "",
        f"Generated {report['generated']}. State: **{report['state']}**.",
        "",
        f"- Budget: {usd(budget['usd'])}"
        + (" (submitted although the forecast exceeded it)" if budget["submitted_over_forecast"] else ""),
        f"- Forecast: {usd(forecast.get('usd'))} (band {usd(forecast.get('usd_low'))}-{usd(forecast.get('usd_high'))})",
        f"- Spent: {usd(spent['usd'])} over {spent['device_hours']:.4f} device-hours; "
        f"lost work {usd(spent['lost_work_usd'])}",
        "",
        "| phase | forecast | spent |",
        "| --- | ---: | ---: |",
    ]
    forecast_by_phase = {p["phase"]: p["usd"] for p in forecast.get("phases", [])}
    for phase in dict.fromkeys([*forecast_by_phase, *spent["by_phase"]]):
        lines.append(f"| {phase} | {usd(forecast_by_phase.get(phase))} | {usd(spent['by_phase'].get(phase))} |")
    pretrain = report["pretrain"]
    if pretrain:
        lines += [
            "",
            f"Pretraining: step {pretrain['step']}/{pretrain['train_iters']}, {pretrain['consumed_tokens']:,} tokens, "
            f"loss {pretrain['loss']}, median {pretrain['median_tokens_per_s']:,.0f} tokens/s.",
        ]
        if pretrain.get("median_real_tokens_per_s") is not None:
            mfu = pretrain.get("median_mfu")
            lines.append(
                f"Real (non-padding) tokens: {pretrain['real_token_fraction']:.1%}, "
                f"median {pretrain['median_real_tokens_per_s']:,.0f}/s, "
                f"{pretrain['median_model_tflops_per_s_per_device']:.3f} model TFLOP/s per device, "
                f"MFU {'n/a (no GPU peak known)' if mfu is None else f'{mfu:.1%}'}."
            )
    if report["finetune"]:
        lines += ["", "| task | metric | score | train | validation |", "| --- | --- | ---: | ---: | ---: |"]
        for task, r in report["finetune"].items():
            lines.append(
                f"| {task} | {r['metric']} | {r['score']:.4f} | {r['train_examples']} | {r['validation_examples']} |"
            )
    lines += ["", "Prices:", ""]
    lines += [
        f"- {p['device']}: {usd(p['usd_per_hour'])}/device-hour — {p['source']} ({p['date']})" for p in report["prices"]
    ]
    return "\n".join(lines) + "\n"


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def render_plots(report: dict[str, Any]) -> dict[str, str]:
    """Spend over time against the budget and forecast lines; forecast vs spend per phase (base64 PNGs)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plots = {}
    series = report["spend_series"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if series:
        t0 = series[0][0]
        ax.plot([(t - t0) / 60 for t, _ in series], [usd for _, usd in series], label="spent")
    if report["budget"]["usd"] is not None:
        ax.axhline(report["budget"]["usd"], color="red", linestyle="--", label="budget")
    if report["forecast"]:
        ax.axhline(report["forecast"]["usd"], color="gray", linestyle=":", label="forecast (latest)")
    if report.get("forecast_at_submit"):
        ax.axhline(report["forecast_at_submit"]["usd"], color="silver", linestyle="-.", label="forecast at submit")
    ax.set_xlabel("minutes since the run started")
    ax.set_ylabel("US dollars")
    ax.set_title("Spend over time")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    plots["spend"] = _figure_png(fig)
    plt.close(fig)

    forecast_by_phase = {p["phase"]: p["usd"] for p in (report["forecast"] or {}).get("phases", [])}
    phases = list(dict.fromkeys([*forecast_by_phase, *report["spent"]["by_phase"]]))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = range(len(phases))
    ax.bar([x - 0.2 for x in xs], [forecast_by_phase.get(p, 0) for p in phases], width=0.4, label="forecast")
    ax.bar([x + 0.2 for x in xs], [report["spent"]["by_phase"].get(p, 0) for p in phases], width=0.4, label="spent")
    ax.set_xticks(list(xs), phases, rotation=20, ha="right")
    ax.set_ylabel("US dollars")
    ax.set_title("Forecast and spend by phase")
    ax.legend()
    plots["phases"] = _figure_png(fig)
    plt.close(fig)
    return plots


def render_html(report: dict[str, Any], markdown: str) -> str:
    plots = render_plots(report)
    images = "\n".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'
        for name, data in plots.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sobert budget report: {html.escape(report["run"])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} img{{max-width:100%}}
pre{{white-space:pre-wrap;background:#f6f6f6;padding:1em}}</style></head>
<body><h1>Budget report: {html.escape(report["run"])}</h1>
{images}
<pre>{html.escape(markdown)}</pre>
</body></html>
"""


def write_report(spec: RunSpec, storage: Storage, now: float | None = None) -> tuple[dict[str, Any], str]:
    """Build and publish report.json, report.md and report.html under runs/<run>/cost/."""
    report = build_report(spec, storage, now)
    markdown = render_markdown(report)
    prefix = paths.cost_prefix(spec.name)
    storage.write_json(f"{prefix}/report.json", report)
    storage.write_bytes(f"{prefix}/report.md", markdown.encode())
    storage.write_bytes(f"{prefix}/report.html", render_html(report, markdown).encode())
    return report, markdown
