"""The controller's resyncs and retries (`controller.requeue.Requeue`), and which events of a run
call for a reconcile (`handlers.needs_reconcile`)."""

from __future__ import annotations

import threading

from sobert_operator.controller.handlers import is_done, needs_reconcile
from sobert_operator.controller.requeue import Requeue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fired_by(requeue_clock: Clock, schedule, advance_to: float) -> list:
    """The keys a Requeue fires when its clock moves to `advance_to` after `schedule(requeue)`."""
    fired: list = []
    done = threading.Event()

    def fire(key):
        fired.append(key)
        done.set()

    requeue = Requeue(fire, workers=1, clock=requeue_clock)
    try:
        schedule(requeue)
        requeue_clock.now = advance_to
        requeue.after("marker", 0.0)  # wakes the timer thread; fires after anything due before it
        while "marker" not in fired:
            assert done.wait(5), fired
            done.clear()
    finally:
        requeue.stop()
    return [key for key in fired if key != "marker"]


def test_a_key_fires_once_when_due_and_not_before():
    clock = Clock()
    assert fired_by(clock, lambda r: r.after("run", 10.0), 9.0) == []
    clock = Clock()
    assert fired_by(clock, lambda r: r.after("run", 10.0), 10.0) == ["run"]


def test_a_later_reconcile_moves_the_time_on_and_forget_cancels():
    def rescheduled(requeue):
        requeue.after("run", 1.0)
        requeue.after("run", 30.0)  # reconciled in between: due 30 s after that

    assert fired_by(Clock(), rescheduled, 20.0) == []
    assert fired_by(Clock(), rescheduled, 30.0) == ["run"]

    def forgotten(requeue):
        requeue.after("run", 1.0)
        requeue.forget("run")

    assert fired_by(Clock(), forgotten, 100.0) == []


def test_keys_fire_in_the_order_they_fall_due():
    def several(requeue):
        requeue.after("b", 2.0)
        requeue.after("a", 1.0)
        requeue.after("c", 3.0)

    assert fired_by(Clock(), several, 5.0) == ["a", "b", "c"]


def run(generation: int, observed: int | None) -> dict:
    status = {} if observed is None else {"observedGeneration": observed}
    return {"metadata": {"name": "r", "namespace": "ns", "generation": generation}, "status": status}


def test_a_run_is_reconciled_when_listed_added_or_its_spec_changed_not_for_its_own_status():
    assert needs_reconcile(None, run(1, 1))  # listed when the controller starts
    assert needs_reconcile("ADDED", run(1, None))
    assert needs_reconcile("MODIFIED", run(2, 1))  # its spec changed
    assert not needs_reconcile("MODIFIED", run(1, 1))  # the controller's own status patch


def test_a_finished_run_is_done_once_no_pod_is_open_in_its_status_or_in_the_patch_written():
    assert not is_done({"phase": "Pretraining"})
    assert not is_done({"phase": "Succeeded", "cost": {"openPods": {"pod-a": {"since": 1}}}})
    assert is_done({"phase": "Succeeded", "cost": {"openPods": {}}})
    assert is_done({"phase": "Succeeded", "cost": {"openPods": {"pod-a": None}}})  # closed by the merge patch


def test_a_call_runs_in_the_context_of_the_call_that_set_its_time():
    """As a kopf handler's: kopf's Events and loggers read its context variables."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    seen: list[str] = []
    done = threading.Event()

    def fire(key):
        seen.append(var.get("unset"))
        done.set()

    requeue = Requeue(fire, workers=1)
    try:
        var.set("the handler's")
        requeue.after("run", 0.0)
        assert done.wait(5)
    finally:
        requeue.stop()
    assert seen == ["the handler's"]


def test_kopf_passes_on_a_runs_event_only_when_the_handler_acts_on_it():
    from sobert_operator.controller.handlers import LEGACY_FINALIZER, run_needs_handling

    assert not run_needs_handling(type="MODIFIED", body=run(1, 1))  # its own status patch
    assert run_needs_handling(type="MODIFIED", body=run(2, 1))
    assert run_needs_handling(type="DELETED", body=run(1, 1))
    left = run(1, 1)
    left["metadata"]["finalizers"] = [LEGACY_FINALIZER]
    assert run_needs_handling(type="MODIFIED", body=left)


def test_a_stopped_requeue_fires_nothing_and_takes_no_new_time():
    fired: list = []
    requeue = Requeue(fired.append, workers=1)
    requeue.after("later", 3600.0)
    requeue.stop()
    requeue.after("now", 0.0)
    requeue.stop()  # again: harmless
    assert fired == [] and "now" not in requeue.pending()


def test_a_failing_call_is_logged_and_the_requeue_goes_on(caplog):
    fired: list = []
    done = threading.Event()

    def fire(key):
        if key == "bad":
            raise RuntimeError("boom")
        fired.append(key)
        done.set()

    requeue = Requeue(fire, workers=1)
    try:
        requeue.after("bad", 0.0)
        requeue.after("good", 0.0)
        assert done.wait(5)
    finally:
        requeue.stop()
    assert fired == ["good"]
    assert "the requeued call for bad failed" in caplog.text
