"""Question quality: the Kaggle "60k Stack Overflow Questions with Quality Rating" data.

Two layouts: the original CSV (`Id,Title,Body,Tags,CreationDate,Y`, HTML bodies) and JSON Lines
with `text` and `rating` (a preprocessed variant). The example text is the title, the body as
plain text (code kept between [CODE] markers, see `data.html_text`) and the tags.
"""

from __future__ import annotations

import json
from pathlib import Path

from sobert_trainer.data.html_text import html_to_segments
from sobert_trainer.finetune.examples import LoadResult, TaskDataError, TextExample
from sobert_trainer.finetune.loaders.common import check_label, csv_records, physical_lines, read_text

QUALITY_LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")


def load_question_quality(
    path: str | Path, labels: tuple[str, ...] = QUALITY_LABELS, encoding: str = "utf-8"
) -> LoadResult:
    if Path(path).suffix.lower() in (".jsonl", ".json"):
        return _load_jsonl(path, labels, encoding)
    return _load_csv(path, labels, encoding)


def _load_csv(path, labels, encoding) -> LoadResult:
    result = LoadResult()
    for line, row in csv_records(path, encoding, ("Id", "Title", "Body", "Y")):
        label = check_label(path, line, "Y", row["Y"].strip(), labels)
        tags = " ".join(t for t in row.get("Tags", "").replace(">", " ").replace("<", " ").split())
        body = "\n".join(html_to_segments(row["Body"]))
        if not (row["Title"].strip() or body.strip()):
            result.skipped["empty text"] = result.skipped.get("empty text", 0) + 1
            continue
        text = "\n".join(part for part in (row["Title"].strip(), body, tags) if part)
        result.examples.append(TextExample(row["Id"].strip() or f"line-{line}", text, label))
    return result


def _load_jsonl(path, labels, encoding) -> LoadResult:
    result = LoadResult()
    for number, raw in enumerate(physical_lines(read_text(path, encoding)), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict) or "text" not in record or "rating" not in record:
            raise TaskDataError(f"{path}:{number}: expected an object with keys text and rating")
        label = check_label(path, number, "rating", str(record["rating"]), labels)
        text = str(record["text"]).strip()
        if not text:
            result.skipped["empty text"] = result.skipped.get("empty text", 0) + 1
            continue
        example_id = str(record.get("source_row", record.get("Id", f"line-{number}")))
        result.examples.append(TextExample(example_id, text, label))
    return result
