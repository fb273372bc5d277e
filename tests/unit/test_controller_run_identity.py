"""What the controller keeps of a run is the run's, not its name's: a run deleted and created
again under the same name (`kubectl replace --force`, a re-submit) neither reads the old run's
jobs nor inherits its meter, while the old one's are still going."""

from __future__ import annotations

from sobert_operator.controller import handlers


def job(name: str, owner_uid: str, created: str) -> dict:
    return {
        "kind": "PyTorchJob",
        "metadata": {"name": name, "creationTimestamp": created, "ownerReferences": [{"uid": owner_uid}]},
    }


def run(uid: str) -> dict:
    return {"metadata": {"name": "r", "namespace": "ns", "uid": uid}}


def test_a_run_reads_only_the_jobs_it_owns(monkeypatch):
    old = job("r-pretrain", "uid-old", "2026-12-05T10:00:00Z")
    monkeypatch.setitem(handlers._state, "owned", {("ns", "PyTorchJob", "r-pretrain"): [old]})
    assert handlers._owned("ns", "PyTorchJob", "r-pretrain", "uid-new") is None  # the old run's, going
    assert handlers._owned("ns", "PyTorchJob", "r-pretrain", "uid-old") is old
    new = job("r-pretrain", "uid-new", "2026-12-05T09:00:00Z")
    monkeypatch.setitem(handlers._state, "owned", {("ns", "PyTorchJob", "r-pretrain"): [old, new]})
    assert handlers._owned("ns", "PyTorchJob", "r-pretrain", "uid-new") is new


def test_a_new_run_of_the_same_name_begins_its_own_meter(monkeypatch):
    monkeypatch.setitem(handlers._state, "meters", {})
    first = handlers._meter_memory(run("uid-1"))
    assert handlers._meter_memory(run("uid-1")) is first
    second = handlers._meter_memory(run("uid-2"))
    assert second is not first
    assert handlers._meter_memory(run("uid-2")) is second
