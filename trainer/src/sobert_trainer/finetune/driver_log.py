"""The finetune driver's own output, kept in the run's storage.

A RayJob's driver prints to its Ray head (the job log) and to the submitter pod that follows it.
KubeRay deletes the Ray cluster `rayClusterTtlSeconds` after the job ends, and the submitter pod
goes with its Job, so the driver's lines are copied to `runs/<run>/finetune/<task>/driver.log`
before the driver exits, whatever its outcome.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

from sobert_api.storage import Storage


@contextlib.contextmanager
def copied_to_storage(storage: Storage, key: str) -> Iterator[None]:
    """Tee file descriptors 1 and 2 (Python's prints and what native code and child processes
    write) into a file while the block runs, then upload it to `key`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    capture = tempfile.NamedTemporaryFile(prefix="driver-", suffix=".log", delete=False)  # noqa: SIM115
    lock = threading.Lock()

    def pump(read_end: int, original: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                os.write(original, chunk)  # each stream stays where it went
                with lock:
                    capture.write(chunk)

    threads = []
    for fd in (1, 2):
        read_end, write_end = os.pipe()
        thread = threading.Thread(target=pump, args=(read_end, saved[fd]), daemon=True, name=f"driver-log-{fd}")
        thread.start()
        threads.append(thread)
        os.dup2(write_end, fd)
        os.close(write_end)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)  # closes the pipes' last write ends: the pumps see EOF
        for thread in threads:
            thread.join(timeout=30)
        capture.close()
        try:
            storage.upload_file(capture.name, key)
        except Exception as exc:
            print(f"warning: could not copy the driver log to {key}: {exc}", file=sys.stderr)
        finally:
            os.unlink(capture.name)
            for fd in saved.values():
                os.close(fd)
