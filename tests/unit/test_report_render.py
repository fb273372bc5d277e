"""The budget report's Markdown and HTML render one view of report.json: the same figures, the
HTML as real headings, lists and tables (no Markdown source on the page), each price once."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from report_runs import write_sample_report
from sobert_api import paths
from sobert_operator.cost.money import usd


@pytest.fixture()
def written(tmp_path):
    storage, report, markdown = write_sample_report(tmp_path)
    page = storage.read_bytes(f"{paths.cost_prefix('rep')}/report.html").decode()
    return report, markdown, page


class _Page(HTMLParser):
    """Headings, definition-list pairs and table cells as text, plus every tag seen."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.headings: list[str] = []
        self.facts: list[tuple[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._open: str | None = None
        self._buffer = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        if tag in ("h1", "h2", "dt", "dd", "td", "th"):
            self._open, self._buffer = tag, ""

    def handle_endtag(self, tag):
        if tag != self._open:
            return
        text, self._open = self._buffer, None
        if tag in ("h1", "h2"):
            self.headings.append(text)
        elif tag == "dt":
            self.facts.append((text, ""))
        elif tag == "dd":
            self.facts[-1] = (self.facts[-1][0], text)
        else:
            self.tables[-1][-1].append(text)

    def handle_data(self, data):
        self.text.append(data)
        if self._open:
            self._buffer += data


def _markdown_tables(markdown: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("| "):
            if not previous.startswith("| "):
                tables.append([])
            cells = [c.strip().replace("\\|", "|") for c in line.strip()[2:-2].split(" | ")]
            if not all(set(c) <= set("-:") for c in cells):
                tables[-1].append(cells)
        previous = line
    return tables


def test_html_and_markdown_show_the_same_figures(written):
    report, markdown, page = written
    parsed = _Page()
    parsed.feed(page)
    assert parsed.tables == _markdown_tables(markdown)
    assert parsed.facts == [tuple(line[2:].split(": ", 1)) for line in markdown.splitlines() if line.startswith("- ")]
    assert parsed.headings[1:] == [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    phases = {row[0]: row for row in parsed.tables[0][1:]}
    for phase, spent in report["spent"]["by_phase"].items():
        assert phases[phase][2] == usd(spent)  # the JSON's figure, formatted once


def test_html_is_a_page_not_markdown_source(written):
    _, _, page = written
    parsed = _Page()
    parsed.feed(page)
    text = "".join(parsed.text)
    assert "pre" not in parsed.tags and "script" not in parsed.tags
    assert {"h1", "h2", "dl", "table", "thead", "tbody", "figure"} <= set(parsed.tags)
    assert "| ---" not in text and "\n- " not in text and "**" not in text and "## " not in text
    assert page.count("data:image/png;base64,") == 3  # spend, spend by phase, pretraining loss
    assert 'name="viewport"' in page and "@media print" in page and "@media (max-width" in page
    # Nothing is fetched: the only src are the inlined plots, no stylesheet or font is linked.
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert all(src.startswith("data:") for src in _attributes(page, "src"))


def _attributes(page: str, name: str) -> list[str]:
    found: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v or "" for k, v in attrs if k == name)

    Collect().feed(page)
    return found


def test_each_price_is_listed_once_with_its_source_and_date(written):
    report, markdown, _ = written
    prices = report["prices"]
    assert len({(p["device"], p["usd_per_hour"]) for p in prices}) == len(prices) == 1  # train device and cpu: one
    assert prices[0]["source"].startswith("https://") and prices[0]["date"]
    assert markdown.count(prices[0]["source"]) == 1


def test_the_pretraining_section_shows_the_validation_loss_from_progress(written):
    """The report's loss curves are the progress records' (the validation loss at the steps that
    evaluated it); its Pretraining section gives the last validation loss and plots both."""
    report, markdown, page = written
    assert report["pretrain"]["loss_curves"] == {
        "train": [[10, 8.3], [20, 8.1]],
        "validation": [[10, 8.35], [20, 8.2]],
    }
    assert "- Validation loss: 8.2 at step 20" in markdown
    assert 'alt="Pretraining: plot"' in page
