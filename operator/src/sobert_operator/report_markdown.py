"""The budget report's view (`report_view.py`) as Markdown, for the terminal and report.md."""

from __future__ import annotations

from sobert_operator.report_view import ReportView, Table


def render_markdown(view: ReportView) -> str:
    lines = [f"# {view.title}", "", view.subtitle, ""]
    for section in view.sections:
        lines += [f"## {section.title}", ""]
        if section.facts:
            lines += [f"- {label}: {value}" for label, value in section.facts] + [""]
        for table in section.tables:
            lines += [*_table(table), ""]
        for note in section.notes:
            lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def _table(table: Table) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rule = ["---:" if i in table.numeric else "---" for i in range(len(table.columns))]
    lines = [f"| {' | '.join(table.columns)} |", f"| {' | '.join(rule)} |"]
    lines += [f"| {' | '.join(cell(c) for c in row)} |" for row in table.rows]
    if table.caption:
        lines += ["", table.caption]
    return lines
