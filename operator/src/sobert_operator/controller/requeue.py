"""Each run's next reconcile when no event brings one: the resync of a run that is not done, and
the retry of a reconcile that failed.

controller-runtime's `reconcile.Result{RequeueAfter: d}` (kubernetes-sigs/controller-runtime
v0.22.0, `pkg/internal/controller/controller.go`, `reconcileHandler` calls `Queue.AddAfter`): after
each reconcile the run is due again `d` later, and a reconcile in between (an event of the run or
of one of its jobs) moves that time on, so a run that keeps changing is not also resynced. kopf's
own timers would do the same, but kopf adds a finalizer to every object a timer watches (kopf
1.45.2 `on.timer`, `requires_finalizer=True`) and patches it, which costs each run two more writes
and two more watch events than its reconciles need.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor


class Requeue:
    """Calls `fire(key)` once each key falls due, in a small thread pool, in the context
    (`contextvars`) of the `after` call that set the time, as asyncio's `call_later` does: a call set
    from a kopf handler can post Events and log as the handler would. Thread-safe."""

    def __init__(self, fire: Callable[[Hashable], None], workers: int = 4, clock: Callable[[], float] = time.monotonic):
        self._fire = fire
        self._clock = clock
        self._due: dict[Hashable, tuple[float, contextvars.Context]] = {}  # each key's one pending time
        self._heap: list[tuple[float, int, Hashable]] = []  # (time, tiebreak, key); stale entries skipped
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sobert-requeue")
        self._thread = threading.Thread(target=self._run, name="sobert-requeue-timer", daemon=True)
        self._thread.start()

    def after(self, key: Hashable, seconds: float) -> None:
        """`key` is due in `seconds`, replacing whatever time it had (once stopped: nothing)."""
        due = self._clock() + seconds
        context = contextvars.copy_context()
        with self._wake:
            if self._stopped:
                return
            self._due[key] = due, context
            heapq.heappush(self._heap, (due, next(self._order), key))
            self._wake.notify()

    def forget(self, key: Hashable) -> None:
        """`key` is not due any more (its run is done or deleted)."""
        with self._wake:
            self._due.pop(key, None)

    def pending(self) -> dict[Hashable, float]:
        """Each pending key's seconds until it is due (for tests and logs)."""
        now = self._clock()
        with self._wake:
            return {key: due - now for key, (due, _) in self._due.items()}

    def stop(self) -> None:
        """Fire nothing more: calls already under way finish, those waiting for a thread are
        dropped. Safe to call again."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                found = self._pop_due()
                if found is None:
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._wake.wait(wait)
                    continue
            key, context = found
            self._pool.submit(context.run, self._call, key)

    def _call(self, key: Hashable) -> None:
        try:
            self._fire(key)
        except Exception:  # the pool would keep it in a future nobody reads
            logging.getLogger(__name__).exception("the requeued call for %s failed", key)

    def _pop_due(self) -> tuple[Hashable, contextvars.Context] | None:
        """The first key due now and its context, taken off; None when none is (the lock held)."""
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            pending = self._due.get(key)
            if pending is not None and pending[0] == due:  # not replaced or forgotten since
                del self._due[key]
                return key, pending[1]
        return None
