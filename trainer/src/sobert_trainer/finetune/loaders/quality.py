"""Question quality: the Kaggle "60k Stack Overflow Questions with Quality Rating" data.

Two layouts, told apart by suffix (`.csv`; `.jsonl` / `.json`) or, for any other name, by the
first character (`{` opens a JSON Lines file):
- the Kaggle CSV, `Id,Title,Body,Tags,CreationDate,Y` with HTML bodies. The example text is the
  title, the body as plain text and the tags, one per line: the title and tags are what a reader
  of the question sees first, and the paper's models read the whole post. Bodies go through
  `data.html_text` (block code kept between [CODE] markers, inline code in backticks); a body
  with no HTML tag at all is kept as plain text, so a `<stdio.h>` in it is not eaten as a tag.
  `CreationDate` is not used.
- JSON Lines with `text` and `rating` (a preprocessed variant); `source_row` (or `Id`) is the id.
"""

from __future__ import annotations

import re
from pathlib import Path

from sobert_api.task_files import (
    QUALITY_LABELS,
    physical_lines,
    quality_csv_records,
    quality_is_json_lines,
    quality_json_records,
    read_text,
)
from sobert_trainer.data.html_text import html_to_segments
from sobert_trainer.finetune.examples import LoadResult, TextExample

_HTML_TAG = re.compile(r"</?(p|pre|code|a|ul|ol|li|blockquote|br|hr|h[1-6]|strong|em|b|i|img|div|table)\b[^>]*>", re.I)


def load_question_quality(
    path: str | Path, labels: tuple[str, ...] = QUALITY_LABELS, encoding: str = "utf-8"
) -> LoadResult[TextExample]:
    """Examples of a quality file; `labels` is the allowed label set (e.g. ("HQ", "LQ") for a collapsed copy)."""
    text = read_text(path, encoding)
    if quality_is_json_lines(str(path), text):
        return _load_jsonl(text, str(path), labels)
    return _load_csv(text, str(path), labels)


def body_text(body: str) -> str:
    """A question body as plain text, one segment per line."""
    if _HTML_TAG.search(body):
        return "\n".join(html_to_segments(body))
    return "\n".join(line.rstrip() for line in physical_lines(body) if line.strip())


def _load_csv(text: str, name: str, labels: tuple[str, ...]) -> LoadResult[TextExample]:
    result: LoadResult[TextExample] = LoadResult()
    for line, row, label in quality_csv_records(text, name, labels):
        title, body = row["Title"].strip(), body_text(row["Body"])
        if not (title or body):
            result.skip("empty text")
            continue
        tags = " ".join(re.findall(r"<([^<>]+)>", row.get("Tags", "")))
        text = "\n".join(part for part in (title, body, tags) if part)
        result.examples.append(TextExample(row["Id"].strip() or f"line-{line}", text, label))
    return result


def _load_jsonl(text: str, name: str, labels: tuple[str, ...]) -> LoadResult[TextExample]:
    result: LoadResult[TextExample] = LoadResult()
    for number, record, label in quality_json_records(text, name, labels):
        if not record["text"].strip():
            result.skip("empty text")
            continue
        example_id = record.get("source_row", record.get("Id", f"line-{number}"))
        result.examples.append(TextExample(str(example_id), record["text"].strip(), label))
    return result
