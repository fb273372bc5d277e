"""When to stop or checkpoint between steps: SIGTERM (preemption, drain, budget suspend) and
checkpoint requests written to storage by the budget policy of either executor."""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist

from sobert_trainer.pretrain.distributed import current_device
from sobert_trainer.storage import Storage


class StopFlag:
    """SIGTERM: checkpoint and exit. A new request object in storage (polled every log interval by
    rank 0): checkpoint now and go on. Both are agreed across ranks between steps, so a step is
    never cut in half."""

    def __init__(self) -> None:
        self.requested = False
        self.checkpoint = False
        self.requests: Storage | None = None
        self.request_key = ""
        self.handled: str | None = None
        signal.signal(signal.SIGTERM, self._handle)

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
            self.handled, self.checkpoint = request, True

    def agreed(self) -> tuple[bool, bool]:
        """(stop, checkpoint now), the same on every rank."""
        flags = torch.tensor([float(self.requested), float(self.checkpoint)], device=current_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.checkpoint = False
        return bool(flags[0].item()), bool(flags[1].item())
