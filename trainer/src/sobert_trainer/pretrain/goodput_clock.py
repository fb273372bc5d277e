"""Where a training process's wall time goes, in the categories of Google's ml-goodput-measurement
(v0.0.x, `goodput.py` BadputType): program start-up and training preparation, checkpoint restore,
waiting for data, checkpoint save, and the training steps themselves; and one of sobert's own, the
validation loss's evaluations. Each progress record carries
this process's totals so far (`fields`); the budget report turns them into dollars
(`sobert_operator.cost.goodput`), together with the work a restart threw away and the padding.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def process_started_at() -> float:
    """When this training process's launch began (unix seconds): its torchrun agent's start when
    torchrun started it (torchrun sets TORCHELASTIC_RUN_ID in its workers), so start-up counts the
    launcher's and the interpreter's imports too; else this process's own start."""
    import os

    import psutil

    me = psutil.Process()
    parent = me.parent() if os.environ.get("TORCHELASTIC_RUN_ID") else None
    return (parent or me).create_time()


@dataclass
class GoodputClock:
    started_at: float = field(default_factory=time.time)  # this process's start (unix seconds)
    resumed_from: int = 0  # the step it resumed from
    startup_s: float | None = None  # start -> first step begins (restore included)
    restore_s: float = 0.0
    data_wait_s: float = 0.0  # inside the steps: waiting for the loader's next micro-batch
    checkpoint_save_s: float = 0.0  # the training loop blocked in a save
    evaluation_s: float = 0.0  # the validation loss (`Trainer.evaluate`)
    train_step_s: float = 0.0  # the steps, data waits included

    def waited(self, batches: Iterator[T]) -> Iterator[T]:
        """`batches`, with the time spent getting each one counted as waiting for data."""
        iterator = iter(batches)
        while True:
            began = time.monotonic()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                self.data_wait_s += time.monotonic() - began
            yield batch

    def restoring(self) -> AbstractContextManager[None]:
        return self._counted("restore_s")

    def saving(self) -> AbstractContextManager[None]:
        return self._counted("checkpoint_save_s")

    def evaluating(self) -> AbstractContextManager[None]:
        return self._counted("evaluation_s")

    @contextmanager
    def _counted(self, account: str) -> Iterator[None]:
        """The block's seconds added to `account`."""
        began = time.monotonic()
        try:
            yield
        finally:
            setattr(self, account, getattr(self, account) + time.monotonic() - began)

    def step_began(self) -> None:
        if self.startup_s is None:
            self.startup_s = time.time() - self.started_at

    def step_ended(self, seconds: float) -> None:
        self.train_step_s += seconds

    def fields(self) -> dict[str, float | int | None]:
        return {
            "process_started_at": round(self.started_at, 3),
            "resumed_from": self.resumed_from,
            "startup_s": None if self.startup_s is None else round(self.startup_s, 3),
            "restore_s": round(self.restore_s, 3),
            "data_wait_s": round(self.data_wait_s, 3),
            "checkpoint_save_s": round(self.checkpoint_save_s, 3),
            "evaluation_s": round(self.evaluation_s, 3),
            "train_step_s": round(self.train_step_s, 3),
        }
