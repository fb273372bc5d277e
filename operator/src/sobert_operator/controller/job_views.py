"""Which events of a run's jobs can move the run: a reconcile costs several API calls, and the
operators rewrite their jobs' status far more often than its state changes (the Training
Operator's replica counts and reconcile times, KubeRay's every poll of its Ray job).

A job's *view* is what the run's reconcile reads from it: its stage state and the phase shown in
the run's status. An event whose view is the one last seen changes nothing, so it is not
reconciled; the periodic resync still covers the rest (spend, vanished pods). The views start
empty, so after a controller restart every job's first event reconciles.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from sobert_operator.kube.observe import job_phase, job_state
from sobert_operator.pipeline import StageState

View = tuple[StageState, str | None]


def view_of(job: Mapping[str, Any] | None) -> View:
    return job_state(job), job_phase(job)  # type: ignore[arg-type]


class JobViews:
    """The last view of each job, by namespace, kind and name. Thread-safe."""

    def __init__(self) -> None:
        self._views: dict[tuple[str, str, str], View] = {}
        self._guard = threading.Lock()

    @staticmethod
    def _key(namespace: str, job: Mapping[str, Any]) -> tuple[str, str, str]:
        return namespace, job["kind"], job["metadata"]["name"]

    def created(self, namespace: str, job: Mapping[str, Any]) -> None:
        """Record the view of a job the controller just created (its first event then matches)."""
        with self._guard:
            self._views[self._key(namespace, job)] = view_of(job)

    def differs(self, namespace: str, job: Mapping[str, Any], event: str) -> bool:
        """Whether `changed` would say so, recording nothing (kopf's `when` filter)."""
        with self._guard:
            return event == "DELETED" or self._views.get(self._key(namespace, job)) != view_of(job)

    def changed(self, namespace: str, job: Mapping[str, Any], event: str) -> bool:
        """Whether this event (ADDED, MODIFIED, DELETED) can move the job's run; records its view."""
        key = self._key(namespace, job)
        with self._guard:
            if event == "DELETED":
                self._views.pop(key, None)
                return True
            view = view_of(job)
            if self._views.get(key) == view:
                return False
            self._views[key] = view
            return True
