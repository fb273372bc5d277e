"""Rank 0's storage I/O off the training loop: one worker thread runs what the loop hands it
(progress uploads, checkpoint-request polls) in order, so a slow object store never stalls a step."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundIO:
    def __init__(self) -> None:
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sobert-storage-io", daemon=True)
        self._thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        self._tasks.put(task)

    def drain(self) -> None:
        """Wait until everything submitted so far has run (before a checkpoint's exit, at the end)."""
        self._tasks.join()

    def close(self) -> None:
        self.drain()
        self._tasks.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except Exception:  # a failed upload or poll is retried with the next record
                log.exception("background storage I/O failed")
            finally:
                self._tasks.task_done()
        self._tasks.task_done()
