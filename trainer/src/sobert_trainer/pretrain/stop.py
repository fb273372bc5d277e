"""When to stop or checkpoint between steps: SIGTERM (preemption, drain, budget suspend) and
checkpoint requests written to storage by the budget policy of either executor."""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

from sobert_api.storage import Storage


class StopFlag:
    """SIGTERM: checkpoint and exit. A new request object in storage (polled every log interval by
    rank 0, on its background I/O thread): checkpoint now and go on. Both are agreed across ranks
    between steps, so a step is never cut in half, over a CPU (gloo) group: the per-step agreement
    never waits for the GPU."""

    def __init__(self) -> None:
        self.requested = False
        self.checkpoint = False
        self.requests: Storage | None = None
        self.request_key = ""
        self.handled: str | None = None
        self.group = None  # set by `join` once the process group exists
        self._lock = threading.Lock()
        signal.signal(signal.SIGTERM, self._handle)

    def join(self) -> None:
        """Make the CPU group the agreement runs over (collective: every rank calls it once)."""
        self.group = dist.new_group(backend="gloo")

    def _handle(self, _signum, _frame) -> None:
        self.requested = True

    def watch_requests(self, storage: Storage, key: str, launched: float) -> None:
        """Poll `key` for checkpoint requests; one written before `launched` was already satisfied by
        an earlier process (it checkpointed before it stopped)."""
        self.requests, self.request_key = storage, key
        if storage.exists(key):
            request = storage.read_json(key)
            if request.get("time", 0) < launched:
                self.handled = request.get("id")

    def poll_storage(self) -> None:
        """A new checkpoint request in storage (its id differs from the last one handled)."""
        if self.requests is None or not self.requests.exists(self.request_key):
            return
        request = self.requests.read_json(self.request_key).get("id")
        if request != self.handled:
            with self._lock:
                self.handled, self.checkpoint = request, True

    def request_checkpoint(self) -> None:
        """Checkpoint after this step (rank 0's checkpoint timer)."""
        with self._lock:
            self.checkpoint = True

    def agreed(self) -> tuple[bool, bool]:
        """(stop, checkpoint now), the same on every rank."""
        with self._lock:
            checkpoint, self.checkpoint = self.checkpoint, False
        flags = torch.tensor([float(self.requested), float(checkpoint)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flags[0]), bool(flags[1])
