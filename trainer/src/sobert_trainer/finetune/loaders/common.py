"""Reading task files: decoding with line-accurate errors, CSV records with their starting line."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from sobert_trainer.finetune.examples import TaskDataError


def read_text(path: str | Path, encoding: str) -> str:
    """The whole file decoded; a bad byte is reported with its line (files here are small)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TaskDataError(
            f"{path}:{line}: byte {data[exc.start : exc.start + 1]!r} is not valid {encoding} "
            f"(set the task's encoding, e.g. cp1252)"
        ) from None
    except LookupError:
        raise TaskDataError(f"{path}: unknown encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")


def physical_lines(text: str) -> list[str]:
    """Lines split on LF only (CRLF tolerated): str.splitlines would also split on U+2028, \\x85,
    ... which occur inside real StackOverflow text and would cut a JSON record in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def csv_records(path: str | Path, encoding: str, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line where the record starts, row) for each CSV record; checks the header first."""
    reader = csv.reader(io.StringIO(read_text(path, encoding), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise TaskDataError(f"{path}: empty file (expected a header with {', '.join(required)})") from None
    except csv.Error as exc:
        raise TaskDataError(f"{path}:1: {exc}") from None
    missing = [column for column in required if column not in header]
    if missing:
        raise TaskDataError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {', '.join(header)}")
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TaskDataError(f"{path}:{start}: {exc}") from None
        if values:
            if len(values) != len(header):
                raise TaskDataError(f"{path}:{start}: {len(values)} fields, the header has {len(header)}")
            yield start, dict(zip(header, values, strict=True))
        start = reader.line_num + 1


def check_label(path: str | Path, line: int, field: str, value: str, labels: Sequence[str]) -> str:
    if value not in labels:
        raise TaskDataError(f"{path}:{line}: {field} {value!r} is not one of {', '.join(labels)}")
    return value
