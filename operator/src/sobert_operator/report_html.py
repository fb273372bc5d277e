"""The budget report's view (`report_view.py`) as one HTML page: headings, definition lists and
tables, plots inlined as PNG data URIs, a stylesheet in the page that fits a phone's width and
prints. No script, no font or image from anywhere else: it opens offline, from a file or a bucket.
"""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

from sobert_operator.report_view import ReportView, Section, Table

STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fff;
  max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0}
h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #ccc}
p.subtitle{color:#555;margin-top:0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:.5rem 0}
dt{font-weight:600}
dd{margin:0}
.table{overflow-x:auto;margin:.75rem 0 1.25rem}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #e2e2e2;vertical-align:top}
th{border-bottom:2px solid #bbb}
.num{text-align:right;white-space:nowrap}
td{overflow-wrap:break-word}
td a{overflow-wrap:anywhere}
caption{caption-side:bottom;text-align:left;color:#555;font-size:.9em;padding-top:.3rem}
figure{margin:1rem 0}
img{max-width:100%;height:auto}
@media (max-width:40rem){body{padding:.5rem;font-size:15px}dl{grid-template-columns:1fr}dd{margin-bottom:.4rem}
  th,td{padding:.25rem .35rem}}
@media print{body{max-width:none;padding:0;font-size:10.5pt}h2{break-after:avoid}
  table,figure,dl{break-inside:avoid}a{color:inherit;text-decoration:none}}
"""
_URL = re.compile(r"https?://[^\s)]+")


def render_html(view: ReportView, plots: dict[str, str]) -> str:
    """The page; `plots` maps a section's plot key to a base64 PNG (`render_plots`)."""
    body = "\n".join(_section(section, plots) for section in view.sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(view.title)}</title>
<style>{STYLE}</style></head>
<body><main>
<h1>{_text(view.title)}</h1>
<p class="subtitle">{_text(view.subtitle)}</p>
{body}
</main></body></html>
"""


def _section(section: Section, plots: dict[str, str]) -> str:
    parts = [f"<section><h2>{_text(section.title)}</h2>"]
    if section.facts:
        items = "".join(f"<dt>{_text(label)}</dt><dd>{_linked(value)}</dd>" for label, value in section.facts)
        parts.append(f"<dl>{items}</dl>")
    parts += [_table(table) for table in section.tables]
    parts += [f"<p>{_linked(note)}</p>" for note in section.notes]
    if section.plot and section.plot in plots:
        parts.append(f'<figure><img alt="{_text(section.title)}: plot" '
                     f'src="data:image/png;base64,{plots[section.plot]}"></figure>')  # fmt: skip
    parts.append("</section>")
    return "\n".join(parts)


def _table(table: Table) -> str:
    def cls(index: int) -> str:
        return ' class="num"' if index in table.numeric else ""

    head = "".join(f'<th scope="col"{cls(i)}>{_text(c)}</th>' for i, c in enumerate(table.columns))
    rows = "".join("<tr>" + "".join(f"<td{cls(i)}>{_linked(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in table.rows)  # fmt: skip
    caption = f"<caption>{_text(table.caption)}</caption>" if table.caption else ""
    return f'<div class="table"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _text(value: str) -> str:
    return html.escape(value, quote=True)


def _linked(value: str) -> str:
    """Escaped text with its URLs as links (a price's source)."""
    out, last = [], 0
    for match in _URL.finditer(value):
        out += [_text(value[last : match.start()]), f'<a href="{_text(match.group())}">{_text(match.group())}</a>']
        last = match.end()
    return "".join(out) + _text(value[last:])


def _figure_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def render_plots(report: dict[str, Any]) -> dict[str, str]:
    """Spend over time against the budget and forecast lines; forecast vs spend per phase; the
    pretraining loss, training and validation; the ETA's history (base64 PNGs, by plot key; a
    plot with nothing to show is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plots = {}
    for key, draw in (("spend", _spend), ("phases", _phases), ("loss", _loss), ("eta", _eta)):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        try:
            if draw(ax, report):
                plots[key] = _figure_png(fig)
        finally:
            plt.close(fig)
    return plots


def _spend(ax, report: dict[str, Any]) -> bool:
    series = report["spend_series"]
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
    return True


def _phases(ax, report: dict[str, Any]) -> bool:
    forecast_by_phase = {p["phase"]: p["usd"] for p in (report["forecast"] or {}).get("phases", [])}
    phases = list(dict.fromkeys([*forecast_by_phase, *report["spent"]["by_phase"]]))
    xs = range(len(phases))
    ax.bar([x - 0.2 for x in xs], [forecast_by_phase.get(p, 0) for p in phases], width=0.4, label="forecast")
    ax.bar([x + 0.2 for x in xs], [report["spent"]["by_phase"].get(p, 0) for p in phases], width=0.4, label="spent")
    ax.set_xticks(list(xs), phases, rotation=20, ha="right")
    ax.set_ylabel("US dollars")
    ax.set_title("Forecast and spend by phase")
    ax.legend()
    return True


def _loss(ax, report: dict[str, Any]) -> bool:
    curves = (report.get("pretrain") or {}).get("loss_curves") or {}
    if not curves.get("train"):
        return False
    ax.plot(*zip(*curves["train"], strict=True), label="training (masked-LM)")
    if curves["validation"]:
        ax.plot(*zip(*curves["validation"], strict=True), marker="o", markersize=3, label="validation (held out)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Pretraining loss")
    ax.legend(loc="best")
    return True


def _eta(ax, report: dict[str, Any]) -> bool:
    history = report.get("eta") or {}
    points = history.get("points")
    if not points:
        return False
    ax.step([p["at_s"] / 60 for p in points], [p["estimated_end_s"] / 60 for p in points], where="post",
            marker="o", markersize=3, label="estimated end")  # fmt: skip
    if history["ended_s"] is not None:
        ax.axhline(history["ended_s"] / 60, color="black", linestyle="--", label="actual end")
    ax.set_xlabel("minutes since the run started (when estimated)")
    ax.set_ylabel("end, minutes since start")
    ax.set_title("Estimated end of the run over time")
    ax.legend(loc="best")
    return True
