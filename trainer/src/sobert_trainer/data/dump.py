"""Stream the rows of a Stack Exchange dump file (Posts.xml, Comments.xml) with bounded memory.

The dump format is strict: an XML declaration, one root element (`<posts>`, `<comments>`), then
one `<row .../>` element per line with every field as an attribute. Rows are parsed one at a
time, so a 100 GB Posts.xml costs the memory of one row. A bad row (malformed XML, invalid
UTF-8, a missing required attribute) is counted and skipped; a file whose *structure* is broken
(no root, text outside rows, truncated before the closing tag) stops with the line number.
Compressed inputs (.gz, .bz2, .7z) and s3:// URIs stream the same way, through a decompressor
process (`decompress.py`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from sobert_api.storage import open_uri
from sobert_trainer.data.decompress import ArchiveError, decompressed_stream, is_plain_local


class DumpFormatError(ValueError):
    """The file is not a Stack Exchange dump; names the source and line (`line`, `problem`: the
    parts, where the error is at a line)."""

    def __init__(self, message: str, line: int | None = None, problem: str | None = None):
        super().__init__(message)
        self.line, self.problem = line, problem


@dataclass
class RowStats:
    """What happened to the rows of one or more dump files."""

    rows: int = 0
    bad: Counter = field(default_factory=Counter)  # reason -> count

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def as_dict(self) -> dict:
        return {"rows": self.rows, "bad": dict(sorted(self.bad.items())), "bad_total": self.bad_total}

    def merge(self, other: RowStats) -> None:
        self.rows += other.rows
        self.bad.update(other.bad)


@contextmanager
def open_dump(uri: str, endpoint_url: str | None = None) -> Iterator[IO[bytes]]:
    """A binary stream of the decompressed dump: a plain local file directly, anything else (a
    compressed file, an s3:// object) through a decompressor process (`decompress.py`)."""
    if is_plain_local(uri):
        with open_uri(uri, endpoint_url) as raw:
            yield raw
        return
    try:
        with decompressed_stream(uri, endpoint_url) as stream:
            yield stream
    except ArchiveError as exc:
        raise DumpFormatError(str(exc)) from None


class RowParser:
    """The dump's structure and rows, line by line, from any point of a file.

    A whole file starts in state `prolog` (before the root element); a piece of one that starts at
    a row boundary after the root starts in `body`, with `first_line` its first line's number.
    `state` after the lines is where the piece ended: `body` if inside the root, `closed` after it.
    `finish()` checks that a whole file ended properly; a piece's end is checked by its reader
    against the next piece (`chunks.py`).
    """

    def __init__(self, source: str, root: str, required: tuple[str, ...], stats: RowStats,
                 state: str = "prolog", first_line: int = 1):  # fmt: skip
        self.source, self.root, self.required, self.stats = source, root, required, stats
        self.state = state  # prolog -> body -> closed
        self.line_no = first_line - 1
        self.first_content_line: int | None = None
        self._open, self._close = f"<{root}>".encode(), f"</{root}>".encode()
        self._pending: list[bytes] = []  # lines of a row that spans lines (not in official dumps)

    def error(self, line_no: int, problem: str) -> DumpFormatError:
        return DumpFormatError(f"{self.source}:{line_no}: {problem}", line_no, problem)

    def rows(self, lines) -> Iterator[dict[str, str]]:
        """Yield each good row's attributes; count bad rows; raise on broken structure."""
        stats, root = self.stats, self.root
        for raw_line in lines:
            self.line_no += 1
            line = raw_line.strip()
            if self.line_no == 1:
                line = line.removeprefix(b"\xef\xbb\xbf").strip()
            if not line:
                continue
            if self.first_content_line is None:
                self.first_content_line = self.line_no
            if self._pending and (line.startswith(b"<row") or line == self._close):
                # The previous row was cut off before its "/>": one bad row, not a lost neighbour.
                stats.rows += 1
                stats.bad["malformed xml"] += 1
                self._pending = []
            if self._pending or line.startswith(b"<row"):
                if self.state != "body":
                    where = f"after </{root}>" if self.state == "closed" else f"before the <{root}> root element"
                    raise self.error(self.line_no, f"<row> {where}")
                self._pending.append(line)
                if not line.endswith(b"/>") and not line.endswith(b"</row>"):
                    continue
                row_bytes, self._pending = b" ".join(self._pending), []
                stats.rows += 1
                row = _parse_row(row_bytes, stats)
                if row is None:
                    continue
                missing = [name for name in self.required if not row.get(name, "").strip()]
                if missing:
                    stats.bad[f"missing {missing[0]}"] += 1
                    continue
                yield row
            elif self.state == "prolog" and line.startswith(b"<?xml"):
                continue
            elif self.state == "prolog" and line == self._open:
                self.state = "body"
            elif self.state == "prolog" and line.replace(b" ", b"") == f"<{root}/>".encode():
                self.state = "closed"  # an empty dump
            elif self.state == "body" and line == self._close:
                self.state = "closed"
            elif self.state == "prolog" and line.startswith(b"<") and not line.startswith(b"<?"):
                found = line[:40].decode("utf-8", "replace")
                raise self.error(self.line_no, f"expected the <{root}> root element, found {found!r}")
            else:
                found = line[:40].decode("utf-8", "replace")
                raise self.error(self.line_no, f"unexpected content {found!r} (not a <row/> element)")

    def end_piece(self) -> None:
        """A piece ends at a line boundary: a row still open there was cut off (one bad row)."""
        if self._pending:
            self.stats.rows += 1
            self.stats.bad["malformed xml"] += 1
            self._pending = []

    def finish(self) -> None:
        """The whole file has been read: it must have ended after its root element."""
        if self._pending:
            raise self.error(self.line_no, "file ends inside a <row> element")
        if self.state == "prolog":
            raise DumpFormatError(f"{self.source}: no <{self.root}> root element (is this a Stack Exchange dump?)")
        if self.state == "body":
            raise self.error(self.line_no, f"file ends before </{self.root}> (truncated?)")


def iter_rows(
    stream: IO[bytes], source: str, root: str, required: tuple[str, ...], stats: RowStats
) -> Iterator[dict[str, str]]:
    """Yield each row's attributes; count bad rows in `stats`; raise on broken structure."""
    parser = RowParser(source, root, required, stats)
    yield from parser.rows(stream)
    parser.finish()


def _parse_row(row_bytes: bytes, stats: RowStats) -> dict[str, str] | None:
    try:
        row_bytes.decode("utf-8")
    except UnicodeDecodeError:
        stats.bad["invalid utf-8"] += 1
        return None
    try:
        element = ET.fromstring(row_bytes)
    except ET.ParseError:
        stats.bad["malformed xml"] += 1
        return None
    return dict(element.attrib)


def iter_dump(
    uri: str, root: str, required: tuple[str, ...], stats: RowStats, endpoint_url: str | None = None
) -> Iterator[dict[str, str]]:
    with open_dump(uri, endpoint_url) as stream:
        yield from iter_rows(stream, uri, root, required, stats)


def iter_posts(uri: str, stats: RowStats, endpoint_url: str | None = None) -> Iterator[dict[str, str]]:
    return iter_dump(uri, "posts", ("Id", "PostTypeId"), stats, endpoint_url)


def iter_comments(uri: str, stats: RowStats, endpoint_url: str | None = None) -> Iterator[dict[str, str]]:
    return iter_dump(uri, "comments", ("Id", "PostId", "Text"), stats, endpoint_url)
