"""Stream the rows of a Stack Exchange dump file (Posts.xml, Comments.xml) with bounded memory.

The dump format is strict: an XML declaration, one root element (`<posts>`, `<comments>`), then
one `<row .../>` element per line with every field as an attribute. Rows are parsed one at a
time, so a 100 GB Posts.xml costs the memory of one row. A bad row (malformed XML, invalid
UTF-8, a missing required attribute) is counted and skipped; a file whose *structure* is broken
(no root, text outside rows, truncated before the closing tag) stops with the line number.
Compressed inputs (.gz, .bz2, .7z) and s3:// URIs stream the same way.
"""

from __future__ import annotations

import bz2
import gzip
import io
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, cast

from sobert_trainer.storage import open_uri


class DumpFormatError(ValueError):
    """The file is not a Stack Exchange dump; names the source and line."""


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
    """A binary stream of the decompressed dump."""
    with ExitStack() as stack:
        raw = stack.enter_context(open_uri(uri, endpoint_url))
        lowered = uri.lower()
        if lowered.endswith(".gz"):
            yield stack.enter_context(cast(IO[bytes], gzip.GzipFile(fileobj=raw)))
        elif lowered.endswith(".bz2"):
            yield stack.enter_context(bz2.BZ2File(raw))
        elif lowered.endswith(".7z"):
            yield stack.enter_context(_open_7z_member(raw, uri))
        else:
            yield raw


@contextmanager
def _open_7z_member(raw: IO[bytes], uri: str) -> Iterator[IO[bytes]]:
    # Stack Exchange publishes one .7z per site holding Posts.xml, Comments.xml, ...; a .7z
    # given here must hold exactly one .xml member (e.g. a re-packed Posts.xml).
    import tempfile

    import py7zr

    with tempfile.TemporaryDirectory(prefix="sobert-7z-") as tmp:
        spooled = io.BufferedRandom(io.FileIO(f"{tmp}/archive.7z", "w+"))
        for block in iter(lambda: raw.read(1 << 20), b""):
            spooled.write(block)
        spooled.seek(0)
        with py7zr.SevenZipFile(spooled, mode="r") as archive:
            members = [name for name in archive.getnames() if name.lower().endswith(".xml")]
            if len(members) != 1:
                raise DumpFormatError(f"{uri}: expected one .xml member in the archive, found {members or 'none'}")
            archive.extract(path=tmp, targets=members)
        with open(f"{tmp}/{members[0]}", "rb") as handle:
            yield handle


def iter_rows(
    stream: IO[bytes], source: str, root: str, required: tuple[str, ...], stats: RowStats
) -> Iterator[dict[str, str]]:
    """Yield each row's attributes; count bad rows in `stats`; raise on broken structure."""
    state = "prolog"  # prolog -> body -> closed
    pending: list[bytes] = []  # lines of a row that spans lines (not in official dumps)
    line_no = 0
    for line_no, raw_line in enumerate(stream, start=1):
        line = raw_line.strip()
        if line_no == 1:
            line = line.removeprefix(b"\xef\xbb\xbf").strip()
        if not line:
            continue
        if pending and (line.startswith(b"<row") or line == f"</{root}>".encode()):
            # The previous row was cut off before its "/>": one bad row, not a lost neighbour.
            stats.rows += 1
            stats.bad["malformed xml"] += 1
            pending = []
        if pending or line.startswith(b"<row"):
            if state != "body":
                where = f"after </{root}>" if state == "closed" else f"before the <{root}> root element"
                raise DumpFormatError(f"{source}:{line_no}: <row> {where}")
            pending.append(line)
            if not line.endswith(b"/>") and not line.endswith(b"</row>"):
                continue
            row_bytes, pending = b" ".join(pending), []
            stats.rows += 1
            row = _parse_row(row_bytes, stats)
            if row is None:
                continue
            missing = [name for name in required if not row.get(name, "").strip()]
            if missing:
                stats.bad[f"missing {missing[0]}"] += 1
                continue
            yield row
        elif state == "prolog" and line.startswith(b"<?xml"):
            continue
        elif state == "prolog" and line == f"<{root}>".encode():
            state = "body"
        elif state == "prolog" and line.replace(b" ", b"") == f"<{root}/>".encode():
            state = "closed"  # an empty dump
        elif state == "body" and line == f"</{root}>".encode():
            state = "closed"
        elif state == "prolog" and line.startswith(b"<") and not line.startswith(b"<?"):
            found = line[:40].decode("utf-8", "replace")
            raise DumpFormatError(f"{source}:{line_no}: expected the <{root}> root element, found {found!r}")
        else:
            found = line[:40].decode("utf-8", "replace")
            raise DumpFormatError(f"{source}:{line_no}: unexpected content {found!r} (not a <row/> element)")
    if pending:
        raise DumpFormatError(f"{source}:{line_no}: file ends inside a <row> element")
    if state == "prolog":
        raise DumpFormatError(f"{source}: no <{root}> root element (is this a Stack Exchange dump?)")
    if state == "body":
        raise DumpFormatError(f"{source}:{line_no}: file ends before </{root}> (truncated?)")


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
