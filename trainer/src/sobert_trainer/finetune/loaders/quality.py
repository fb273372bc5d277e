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

import json
import re
from pathlib import Path

from sobert_trainer.data.html_text import html_to_segments
from sobert_trainer.finetune.examples import LoadResult, TaskDataError, TextExample
from sobert_trainer.finetune.loaders.common import check_label, csv_records, physical_lines, read_text

QUALITY_LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")
CSV_COLUMNS = ("Id", "Title", "Body", "Y")
_HTML_TAG = re.compile(r"</?(p|pre|code|a|ul|ol|li|blockquote|br|hr|h[1-6]|strong|em|b|i|img|div|table)\b[^>]*>", re.I)


def load_question_quality(
    path: str | Path, labels: tuple[str, ...] = QUALITY_LABELS, encoding: str = "utf-8"
) -> LoadResult[TextExample]:
    """Examples of a quality file; `labels` is the allowed label set (e.g. ("HQ", "LQ") for a collapsed copy)."""
    if _is_json_lines(path, encoding):
        return _load_jsonl(path, labels, encoding)
    return _load_csv(path, labels, encoding)


def _is_json_lines(path: str | Path, encoding: str) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return True
    if suffix == ".csv":
        return False
    return read_text(path, encoding).lstrip().startswith("{")


def body_text(body: str) -> str:
    """A question body as plain text, one segment per line."""
    if _HTML_TAG.search(body):
        return "\n".join(html_to_segments(body))
    return "\n".join(line.rstrip() for line in physical_lines(body) if line.strip())


def _load_csv(path: str | Path, labels: tuple[str, ...], encoding: str) -> LoadResult[TextExample]:
    result: LoadResult[TextExample] = LoadResult()
    for line, row in csv_records(path, encoding, CSV_COLUMNS):
        label = check_label(path, line, "Y", row["Y"].strip(), labels)
        title, body = row["Title"].strip(), body_text(row["Body"])
        if not (title or body):
            result.skip("empty text")
            continue
        tags = " ".join(re.findall(r"<([^<>]+)>", row.get("Tags", "")))
        text = "\n".join(part for part in (title, body, tags) if part)
        result.examples.append(TextExample(row["Id"].strip() or f"line-{line}", text, label))
    return result


def _load_jsonl(path: str | Path, labels: tuple[str, ...], encoding: str) -> LoadResult[TextExample]:
    result: LoadResult[TextExample] = LoadResult()
    text = read_text(path, encoding)
    if text.lstrip().startswith("["):
        raise TaskDataError(f"{path}:1: a JSON array; expected JSON Lines (one object with text and rating per line)")
    for number, raw in enumerate(physical_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{path}:{number}: not valid JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(record, dict):
            raise TaskDataError(f"{path}:{number}: a JSON {type(record).__name__}; expected an object")
        missing = [key for key in ("text", "rating") if key not in record]
        if missing:
            raise TaskDataError(f"{path}:{number}: missing key(s) {', '.join(missing)}")
        label = check_label(path, number, "rating", str(record["rating"]).strip(), labels)
        if not isinstance(record["text"], str):
            raise TaskDataError(f"{path}:{number}: text is a {type(record['text']).__name__}; expected a string")
        if not record["text"].strip():
            result.skip("empty text")
            continue
        example_id = record.get("source_row", record.get("Id", f"line-{number}"))
        result.examples.append(TextExample(str(example_id), record["text"].strip(), label))
    return result
