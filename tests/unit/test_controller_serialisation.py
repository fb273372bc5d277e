"""The controller's handlers for one run never overlap: a cancel's cleanup waits for a reconcile
in flight, so nothing that reconcile creates outlives the cleanup. (Seen in CI: a reconcile begun
before `sobertctl cancel` recreated the run's ConfigMap after the cleanup had deleted it.)"""

from __future__ import annotations

import logging
import threading

from sobert_operator.cluster import default_cluster_config
from sobert_operator.controller import handlers


class RecordingClient:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, str | None]] = []

    def delete_labeled(self, api_version: str, kind: str, namespace: str, selector: str, owner_uid=None) -> int:
        self.deleted.append((kind, owner_uid))
        return 0


class RecordingRequeue:
    def __init__(self) -> None:
        self.set: list[tuple] = []

    def after(self, key, seconds) -> None:
        self.set.append((key, seconds))


def test_cleanup_waits_for_the_runs_reconcile_in_flight(monkeypatch):
    client = RecordingClient()
    monkeypatch.setitem(handlers._state, "client", client)
    monkeypatch.setitem(handlers._state, "cluster", default_cluster_config())
    monkeypatch.setitem(handlers._state, "missing", {})
    requeue = RecordingRequeue()
    monkeypatch.setitem(handlers._state, "requeue", requeue)
    in_flight = handlers._lock("ns", "run-1")  # what reconcile holds while it works
    in_flight.acquire()
    cleanup = threading.Thread(target=handlers.cleanup, args=("run-1", "ns", "uid-1", logging.getLogger("t")))
    cleanup.start()
    cleanup.join(timeout=0.5)
    assert cleanup.is_alive() and client.deleted == []  # waiting for the reconcile
    in_flight.release()
    cleanup.join(timeout=5)
    # Only what this run owned: a new run of the same name may be there already.
    assert not cleanup.is_alive() and ("ConfigMap", "uid-1") in client.deleted
    # Then a reconcile that finds the run gone and forgets it (or finds a new run of the name).
    assert requeue.set == [(("ns", "run-1"), 0)]
