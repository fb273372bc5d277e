"""The budget report as people read it: sections of facts, tables and notes, every figure already
formatted. Markdown (`report_markdown.py`) and HTML (`report_html.py`) both render this one view,
so the two show the same figures, and both come from the same report.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sobert_api.timestamps import rfc3339
from sobert_operator.cost.money import usd


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: frozenset[int] = frozenset()  # columns aligned right
    caption: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)  # label, value
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: str | None = None  # a key of the report's plots, shown in this section


@dataclass(frozen=True)
class ReportView:
    title: str
    subtitle: str
    sections: list[Section]


def report_view(report: dict[str, Any]) -> ReportView:
    sections = [_summary(report), _phases(report), _goodput(report)]
    for build in (_progress, _pretraining, _finetuning):
        section = build(report)
        if section is not None:
            sections.append(section)
    sections.append(_prices(report))
    return ReportView(
        title=f"Budget report: run {report['run']} ({report['preset']})",
        subtitle=f"Generated {report['generated']}. State: {report['state']}.",
        sections=sections,
    )


def _summary(report: dict[str, Any]) -> Section:
    budget, spent, forecast = report["budget"], report["spent"], report["forecast"] or {}
    budget_text = usd(budget["usd"])
    if budget["submitted_over_forecast"]:
        budget_text += " (submitted although the forecast exceeded it)"
    facts = [
        ("Budget", budget_text),
        (
            "Forecast",
            f"{usd(forecast.get('usd'))} (band {usd(forecast.get('usd_low'))} to {usd(forecast.get('usd_high'))})",
        ),
        ("Spent", f"{usd(spent['usd'])} over {spent['device_hours']:.4f} device-hours"),
        ("Goodput", _goodput_line(report["goodput"])),
    ]
    submitted = report.get("forecast_at_submit")
    if submitted:
        facts.insert(2, ("Forecast at submit", usd(submitted.get("usd"))))
    return Section("Summary", facts=facts, plot="spend")


def _phases(report: dict[str, Any]) -> Section:
    forecast_by_phase = {p["phase"]: p["usd"] for p in (report["forecast"] or {}).get("phases", [])}
    spent = report["spent"]["by_phase"]
    rows = []
    for phase in dict.fromkeys([*forecast_by_phase, *spent]):
        rows.append([phase, usd(forecast_by_phase.get(phase)), usd(spent.get(phase)),
                     _ratio(forecast_by_phase.get(phase), spent.get(phase))])  # fmt: skip
    table = Table(["phase", "forecast", "spent", "error"], rows, frozenset({1, 2, 3}),
                  caption="error: (forecast - spent) / spent")  # fmt: skip
    return Section("Spend by phase", tables=[table], plot="phases")


CATEGORY_LABELS = {
    "productive": "productive",
    "padding": "padding tokens",
    "startup": "start-up",
    "checkpoint_restore": "checkpoint restore",
    "data_wait": "waiting for data",
    "checkpoint_save": "checkpoint save",
    "evaluation": "validation loss",
    "lost_to_restarts": "work lost to restarts",
    "idle_cluster": "idle cluster (after its job)",
    "other": "other (scheduling, teardown)",
}


def _goodput_line(figures: dict[str, Any]) -> str:
    fraction = figures["goodput_fraction"]
    if fraction is None:
        return "-"
    return f"{fraction:.1%} productive; {usd(figures['badput_usd'])} badput"


def _goodput(report: dict[str, Any]) -> Section:
    figures = report["goodput"]
    run = figures["run"]
    total = sum(run.values())
    by_category = Table(
        ["category", "dollars", "share"],
        [[CATEGORY_LABELS[c], usd(run[c]), f"{run[c] / total:.1%}" if total else "-"] for c in figures["categories"]],
        frozenset({1, 2}),
    )
    rows = []
    for phase, phase_figures in figures["by_phase"].items():
        bad = {c: v for c, v in phase_figures.items() if c != "productive"}
        worst = max(bad, key=lambda c: bad[c])
        rows.append([phase, usd(phase_figures["productive"]), usd(sum(bad.values())),
                     f"{CATEGORY_LABELS[worst]} {usd(bad[worst])}" if bad[worst] > 0 else "-"])  # fmt: skip
    by_phase = Table(["phase", "productive", "badput", "largest badput"], rows, frozenset({1, 2}))
    notes = [
        "Categories after Google's ml-goodput-measurement. Pretraining's come from the training processes' "
        "own clocks (progress.jsonl), as shares of the phase's wall time; a finetune's pods are split at the "
        "task's start and end; padding is the productive time's padding tokens; preparation and conversion are "
        "their phase's work."
    ]
    return Section("Where the money went", tables=[by_category, by_phase], notes=notes)


def _progress(report: dict[str, Any]) -> Section | None:
    history = report.get("eta") or {}
    points = history.get("points") or []
    if not points:
        return None
    last, ended = points[-1], history["ended_s"]
    facts = [("Started", rfc3339(history["started_at"]))]
    if ended is not None:
        facts.append(("Ended", f"{rfc3339(history['started_at'] + ended)}, after {_duration(ended)}"))
    else:
        facts += [
            ("Progress", f"{last['progress_percent']}% (stage {last['stage']})"),
            ("Estimated time left", f"{_duration(last['remaining_s'])} as of {_duration(last['at_s'])} in"),
        ]
    shown = _spread(points, 12)
    rows = [[_duration(p["at_s"]), p["stage"] or "done", f"{p['progress_percent']}%", _duration(p["remaining_s"]),
             _duration(p["estimated_end_s"]),
             f"{(p['estimated_end_s'] - ended) / ended:+.0%}" if ended else "-"] for p in shown]  # fmt: skip
    table = Table(["at", "stage", "progress", "time left", "estimated end", "end error"], rows,
                  frozenset({0, 2, 3, 4, 5}), caption=f"{len(shown)} of {len(points)} estimates; times since the "
                  "run started; end error: estimated end against the actual end")  # fmt: skip
    return Section("Progress and ETA", facts=facts, tables=[table], plot="eta")


def _spread(points: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """At most `count` points, evenly spaced, the first and the last included."""
    if len(points) <= count:
        return points
    return [points[round(i * (len(points) - 1) / (count - 1))] for i in range(count)]


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _ratio(forecast: float | None, spent: float | None) -> str:
    if forecast is None or not spent:
        return "-"
    return f"{(forecast - spent) / spent:+.0%}"


def _pretraining(report: dict[str, Any]) -> Section | None:
    pretrain = report["pretrain"]
    if not pretrain:
        return None
    facts = [
        ("Step", f"{pretrain['step']:,} of {pretrain['train_iters']:,}"),
        ("Tokens", f"{pretrain['consumed_tokens']:,}"),
        ("Loss", f"{pretrain['loss']}"),
        ("Median throughput", f"{pretrain['median_tokens_per_s']:,.0f} tokens/s"),
    ]
    if pretrain.get("median_real_tokens_per_s") is not None:
        mfu = pretrain.get("median_mfu")
        facts += [
            (
                "Real (non-padding) tokens",
                f"{pretrain['real_token_fraction']:.1%}, median {pretrain['median_real_tokens_per_s']:,.0f}/s",
            ),
            ("Model TFLOP/s per device", f"{pretrain['median_model_tflops_per_s_per_device']:.3f}"),
            ("MFU", "n/a (no GPU peak known)" if mfu is None else f"{mfu:.1%}"),
        ]
    validation = (pretrain.get("loss_curves") or {}).get("validation") or []
    if validation:
        step, loss = validation[-1]
        facts.insert(3, ("Validation loss", f"{loss} at step {step:,}"))
    return Section("Pretraining", facts=facts, plot="loss")


def _finetuning(report: dict[str, Any]) -> Section | None:
    failed = report.get("finetune_failed") or {}  # absent from reports written before it existed
    if not report["finetune"] and not failed:
        return None
    rows = [[task, "succeeded", r["metric"], f"{r['score']:.4f}", f"{r['train_examples']:,}",
             f"{r['validation_examples']:,}"] for task, r in report["finetune"].items()]  # fmt: skip
    rows += [[task, "failed", "-", "-", "-", "-"] for task in failed]
    columns = ["task", "outcome", "metric", "score", "train examples", "validation examples"]
    notes = [f"{task} failed: {said} (its driver's log: runs/{report['run']}/finetune/{task}/driver.log)"
             for task, said in failed.items()]  # fmt: skip
    return Section("Finetuning", tables=[Table(columns, rows, frozenset({3, 4, 5}))], notes=notes)


def _prices(report: dict[str, Any]) -> Section:
    rows = [[p["device"], usd(p["usd_per_hour"]), p["source"], p["date"]] for p in report["prices"]]
    table = Table(["device", "per device-hour", "source", "date"], rows, frozenset({1}))
    return Section("Prices", tables=[table], notes=["Every dollar figure above is devices x hours x these prices."])
