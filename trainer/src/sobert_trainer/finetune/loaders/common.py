"""Reading task files: decoding with line-accurate errors, CSV records with the line they start on.

Task files are small (megabytes), so each is decoded whole; a bad byte is still reported with
its physical line, counted in LF-terminated lines as an editor shows them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from sobert_trainer.finetune.examples import TaskDataError


def read_text(path: str | Path, encoding: str) -> str:
    """The whole file decoded (a UTF-8 BOM dropped); a bad byte raises with its line."""
    data = Path(path).read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TaskDataError(
            f"{path}:{line}: byte {data[exc.start : exc.start + 1]!r} is not valid {encoding} "
            f"(pass the file's encoding, e.g. encoding='cp1252')"
        ) from None
    except LookupError:
        raise TaskDataError(f"{path}: unknown encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")


def physical_lines(text: str) -> list[str]:
    """Lines split on LF only (CRLF tolerated). `str.splitlines` would also split on U+2028,
    U+0085, ..., which occur inside real StackOverflow text and would cut a record in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def csv_records(path: str | Path, encoding: str, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line the record starts on, row) for each CSV record, after checking the header.

    Quoted fields may span lines, so the start line is the reader's line count after the
    previous record plus one (lines end at LF only, as in `physical_lines`). `strict` quoting
    turns a stray or unterminated quote into an error at the record it starts, instead of a row
    that silently swallows the rest of the file.
    """
    reader = csv.reader(io.StringIO(read_text(path, encoding), newline="\n"), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise TaskDataError(f"{path}: empty file (expected a header with {', '.join(required)})") from None
    except csv.Error as exc:
        raise TaskDataError(f"{path}:1: header is not valid CSV ({exc})") from None
    missing = [column for column in required if column not in header]
    if missing:
        raise TaskDataError(
            f"{path}:1: missing column(s) {', '.join(missing)} (header has {', '.join(header) or 'nothing'})"
        )
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TaskDataError(f"{path}:{start}: record is not valid CSV ({exc})") from None
        if values:  # a blank line between records is not a record
            if len(values) != len(header):
                raise TaskDataError(f"{path}:{start}: {len(values)} fields, expected {len(header)} as in the header")
            yield start, dict(zip(header, values, strict=True))
        start = reader.line_num + 1


def check_label(path: str | Path, line: int, field: str, value: str, labels: Sequence[str]) -> str:
    """`value` if it is one of `labels`, else an error naming the file, line, field and label set."""
    if value not in labels:
        raise TaskDataError(f"{path}:{line}: {field} {value!r} is not one of {', '.join(labels)}")
    return value
