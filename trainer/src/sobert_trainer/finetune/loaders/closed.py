"""Closed questions: the Kaggle 2012 "Predict Closed Questions on Stack Overflow" CSV.

The input is the title, the Markdown body (kept as written: 4-space-indented code stays code)
and the tags Tag1..Tag5, one part per line. Nothing else is read into the text: `PostClosedDate`
is set exactly for closed questions (the competition's test files dropped it), and the owner
and date columns describe the asker, not the question, which a text model is meant to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sobert_api.task_files import CLOSED_LABELS, CLOSED_TAG_COLUMNS, CLOSED_TEXT_COLUMNS, closed_records, read_text
from sobert_trainer.finetune.examples import LoadResult, TextExample


def example_text(row: Mapping[str, str]) -> str:
    """What the model sees of a row (only its `CLOSED_TEXT_COLUMNS` are read): title, body, tags;
    empty when the row has none of them."""
    tags = " ".join(tag for tag in (row[column].strip() for column in CLOSED_TAG_COLUMNS) if tag)
    body = row["BodyMarkdown"].replace("\r\n", "\n").strip()
    return "\n".join(part for part in (row["Title"].strip(), body, tags) if part)


def load_closed_questions(
    path: str | Path, labels: tuple[str, ...] = CLOSED_LABELS, encoding: str = "utf-8"
) -> LoadResult[TextExample]:
    """Examples of a competition CSV (train or a sample of it) labelled by `OpenStatus`."""
    result: LoadResult[TextExample] = LoadResult()
    for line, row, label in closed_records(read_text(path, encoding), str(path), labels):
        text = example_text({column: row[column] for column in CLOSED_TEXT_COLUMNS})
        if not row["Title"].strip() and not row["BodyMarkdown"].strip():
            result.skip("empty text")
            continue
        result.examples.append(TextExample(row["PostId"].strip() or f"line-{line}", text, label))
    return result
