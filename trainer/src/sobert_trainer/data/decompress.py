"""Decompress a dump in a process of its own: `python -m sobert_trainer.data.decompress URI`.

The decompressed bytes go to stdout. A 100 GB Posts.xml ships as a ~20 GB .7z; decompressing it
in the process that also splits and dispatches the rows would put LZMA (single-threaded, ~50-100
MB/s) and everything else on one core. In its own process the decompressor runs at its own speed,
on its own core, and the reader only copies from a pipe. `.gz` and `.bz2` stream through Python's
zlib/bz2 (C); `.7z` through py7zr, whose `WriterFactory` hands over the member's bytes as they are
decompressed. A `.7z` must hold exactly one `.xml` member (Stack Exchange's per-site archives hold
Posts.xml, Comments.xml, ...: re-pack the one wanted, or unpack it). 7z archives keep their index at
the end, so an `s3://` one is first copied to a local temporary file; the others stream from S3.
Exit status 0 when the whole member was written, 2 with a message on stderr for a bad archive.
"""

from __future__ import annotations

import bz2
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, cast

from sobert_api.storage import StorageError, is_s3, open_uri

BLOCK = 1 << 20
ENDPOINT_ENV = "SOBERT_DECOMPRESS_ENDPOINT_URL"


def compression_of(uri: str) -> str | None:
    """'gz', 'bz2', '7z' by the name's suffix (any case), None for a plain file."""
    lowered = uri.lower()
    for suffix in ("gz", "bz2", "7z"):
        if lowered.endswith(f".{suffix}"):
            return suffix
    return None


def is_plain_local(uri: str) -> bool:
    """A local file that needs no decompressor: read where it lies."""
    return compression_of(uri) is None and not is_s3(uri)


class ArchiveError(ValueError):
    """An archive this reader cannot take a dump from."""


def write_decompressed(uri: str, out: IO[bytes], endpoint_url: str | None = None) -> None:
    """The decompressed bytes of `uri` (local or s3://) to `out`."""
    kind = compression_of(uri)
    with open_uri(uri, endpoint_url) as raw:
        if kind == "7z":
            _write_7z_member(raw, uri, out)
            return
        if kind == "gz":
            source: IO[bytes] = cast(IO[bytes], gzip.GzipFile(fileobj=raw))
        elif kind == "bz2":
            source = cast(IO[bytes], bz2.BZ2File(raw))
        else:
            source = raw
        with source:
            shutil.copyfileobj(source, out, BLOCK)


def _write_7z_member(raw: IO[bytes], uri: str, out: IO[bytes]) -> None:
    import py7zr
    from py7zr.io import Py7zIO, WriterFactory

    class Passthrough(Py7zIO):
        def __init__(self) -> None:
            self.written = 0

        def write(self, s: bytes | bytearray) -> int:
            out.write(s)
            self.written += len(s)
            return len(s)

        def read(self, size: int | None = None) -> bytes:
            return b""

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.written

        def flush(self) -> None:
            out.flush()

        def size(self) -> int:
            return self.written

    class ToOut(WriterFactory):
        def create(self, filename: str) -> Py7zIO:
            return Passthrough()

    with tempfile.TemporaryDirectory(prefix="sobert-7z-") as tmp:
        if is_s3(uri):
            local = os.path.join(tmp, "archive.7z")
            with open(local, "wb") as spool:
                shutil.copyfileobj(raw, spool, BLOCK)
            archive_source: str | IO[bytes] = local
        else:
            archive_source = raw
        with py7zr.SevenZipFile(archive_source, mode="r") as archive:
            members = [name for name in archive.getnames() if name.lower().endswith(".xml")]
            if len(members) != 1:
                raise ArchiveError(f"{uri}: expected one .xml member in the archive, found {members or 'none'}")
            archive.extract(targets=members, factory=ToOut())


@contextmanager
def decompressed_stream(uri: str, endpoint_url: str | None = None) -> Iterator[IO[bytes]]:
    """A pipe from a decompressor process for `uri`. Raises ArchiveError with the process's
    message if it fails, also when the reader failed first because the stream ended early."""
    env = dict(os.environ)
    if endpoint_url:
        env[ENDPOINT_ENV] = endpoint_url
    process = subprocess.Popen(
        [sys.executable, "-m", "sobert_trainer.data.decompress", uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    try:
        yield process.stdout
    except BaseException:
        failure = _stop(process)  # a closed pipe ends a decompressor still writing
        if failure:
            raise ArchiveError(f"{failure}") from None
        raise
    failure = _stop(process)
    if failure:
        raise ArchiveError(failure)


def _stop(process: subprocess.Popen, timeout_s: float = 30) -> str | None:
    """Close the pipe and reap the process; its error message if it failed, else None."""
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    try:
        _, error = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, error = process.communicate()
    if process.returncode == 0:
        return None
    lines = error.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"decompressor exited with {process.returncode}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sobert_trainer.data.decompress URI", file=sys.stderr)
        return 2
    try:
        write_decompressed(args[0], sys.stdout.buffer, os.environ.get(ENDPOINT_ENV))
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader stopped early (it found what it needed, or failed)
        return 0
    except (ArchiveError, StorageError) as exc:  # their messages name the file
        print(f"{exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a corrupt archive raises the codec's own errors (EOFError, OSError, ...)
        print(f"{args[0]}: cannot decompress: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
