"""A dump file cut into pieces at row boundaries, so the pieces can be parsed in parallel.

Stack Exchange dumps hold one `<row .../>` per line, so a piece that starts after a newline starts
at a row. A piece ends at the first newline at or after `chunk_bytes` past its start: the pieces
depend on the file's bytes and `chunk_bytes` only, never on how many workers parse them, which is
what makes the prepared dataset the same for any worker count.

A plain local file is cut by seeking (`row_aligned_ranges`): nothing is copied, each worker reads
its own range. Anything else (compressed, s3://) is one stream, from a decompressor process
(`decompress.py`); `spill_chunks` copies it into piece files on local disk as it arrives, cut at
the same boundaries, so workers can start on the first pieces while the rest is still being
decompressed. Memory: one block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK_BYTES = 8 << 20
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Chunk:
    """Bytes [start, end) of `path`, piece `index` of the dump `source` (`final`: its last piece)."""

    source: str
    index: int
    path: str
    start: int
    end: int
    final: bool
    owned: bool = False  # a spilled piece file, deleted once parsed

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            return handle.read(self.end - self.start)


def row_aligned_ranges(path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[int, int]]:
    """[start, end) byte ranges covering `path`, each ending just after a newline (or at EOF)."""
    size = path.stat().st_size
    ranges, start = [], 0
    with open(path, "rb") as handle:
        while start < size:
            end = start + chunk_bytes
            if end < size:
                handle.seek(end)
                handle.readline()
                end = handle.tell()
            end = min(end, size)
            ranges.append((start, end))
            start = end
    return ranges or [(0, 0)]


def file_chunks(source: str, path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    ranges = row_aligned_ranges(path, chunk_bytes)
    return [
        Chunk(source, index, str(path), start, end, final=index == len(ranges) - 1)
        for index, (start, end) in enumerate(ranges)
    ]


def spill_chunks(source: str, stream: IO[bytes], directory: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Copy `stream` into piece files in `directory`, cut as `row_aligned_ranges` cuts a file,
    yielding each piece once it is complete (the last one with `final`)."""
    directory.mkdir(parents=True, exist_ok=True)
    index, written, handle = 0, 0, None
    previous: Chunk | None = None

    def open_piece():
        return open(directory / f"piece-{index:06d}", "wb")

    handle = open_piece()
    try:
        while block := stream.read(_BLOCK):
            while block:
                room = chunk_bytes - written
                if room > 0:
                    head, block = block[:room], block[room:]
                    handle.write(head)
                    written += len(head)
                    continue
                cut = block.find(b"\n")
                if cut < 0:
                    handle.write(block)
                    written += len(block)
                    break
                handle.write(block[: cut + 1])
                written += cut + 1
                block = block[cut + 1 :]
                handle.close()
                if previous is not None:
                    yield previous
                previous = Chunk(source, index, handle.name, 0, written, final=False, owned=True)
                index, written = index + 1, 0
                handle = open_piece()
        handle.close()
        if previous is not None and written == 0:  # the stream ended on a cut
            Path(handle.name).unlink()
            yield Chunk(source, previous.index, previous.path, 0, previous.end, final=True, owned=True)
            return
        if previous is not None:
            yield previous
        yield Chunk(source, index, handle.name, 0, written, final=True, owned=True)
    finally:
        handle.close()
