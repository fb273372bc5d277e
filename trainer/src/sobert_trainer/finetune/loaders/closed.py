"""Closed questions: the Kaggle 2012 "Predict Closed Questions on Stack Overflow" CSV.

The input is the title, the Markdown body and the tags. `PostClosedDate` is set exactly for
closed questions, so it (and the owner/date metadata, which the paper's text models do not use)
is never read.
"""

from __future__ import annotations

from pathlib import Path

from sobert_trainer.finetune.examples import LoadResult, TextExample
from sobert_trainer.finetune.loaders.common import check_label, csv_records

CLOSED_LABELS = ("open", "not a real question", "not constructive", "off topic", "too localized")
TEXT_COLUMNS = ("Title", "BodyMarkdown")
TAG_COLUMNS = ("Tag1", "Tag2", "Tag3", "Tag4", "Tag5")


def example_text(row: dict[str, str]) -> str:
    """What the model sees of a row: title, body, tags — nothing that leaks the label."""
    tags = " ".join(row[c].strip() for c in TAG_COLUMNS if row.get(c, "").strip())
    parts = (row["Title"].strip(), row["BodyMarkdown"].replace("\r\n", "\n").strip(), tags)
    return "\n".join(part for part in parts if part)


def load_closed_questions(
    path: str | Path, labels: tuple[str, ...] = CLOSED_LABELS, encoding: str = "utf-8"
) -> LoadResult:
    result = LoadResult()
    for line, row in csv_records(path, encoding, ("PostId", *TEXT_COLUMNS, "OpenStatus")):
        label = check_label(path, line, "OpenStatus", row["OpenStatus"].strip(), labels)
        text = example_text(row)
        if not text:
            result.skipped["empty text"] = result.skipped.get("empty text", 0) + 1
            continue
        result.examples.append(TextExample(row["PostId"].strip() or f"line-{line}", text, label))
    return result
