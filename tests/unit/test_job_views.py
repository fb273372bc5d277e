"""Which job events the controller reconciles: those that change what the run reads of the job."""

from sobert_operator.controller.job_views import JobViews

NAMESPACE = "ns"


def _job(conditions: list[str], kind: str = "PyTorchJob", name: str = "r-pretrain", **status) -> dict:
    return {
        "kind": kind,
        "metadata": {"name": name},
        "status": {"conditions": [{"type": t, "status": "True"} for t in conditions], **status},
    }


def test_a_status_rewrite_with_the_same_state_and_phase_is_not_reconciled():
    views = JobViews()
    views.created(NAMESPACE, _job([]))  # as rendered: no status
    assert not views.changed(NAMESPACE, _job([]), "ADDED")  # its own creation, seen again
    assert views.changed(NAMESPACE, _job(["Created"]), "MODIFIED")
    assert views.changed(NAMESPACE, _job(["Created", "Running"]), "MODIFIED")
    # The operator's next status writes: replica counts, reconcile times; state and phase the same.
    assert not views.changed(
        NAMESPACE, _job(["Created", "Running"], replicaStatuses={"Master": {"active": 1}}), "MODIFIED"
    )
    assert views.changed(NAMESPACE, _job(["Created", "Running", "Restarting"]), "MODIFIED")
    assert views.changed(NAMESPACE, _job(["Created", "Running", "Succeeded"]), "MODIFIED")
    assert views.changed(NAMESPACE, _job(["Created", "Running", "Succeeded"]), "DELETED")


def test_after_a_restart_every_jobs_first_event_is_reconciled():
    views = JobViews()
    assert views.changed(NAMESPACE, _job(["Created", "Running"]), "ADDED")
    assert not views.changed(NAMESPACE, _job(["Created", "Running"]), "MODIFIED")
    assert views.changed("other", _job(["Created", "Running"]), "ADDED")  # namespaced
    assert views.changed(NAMESPACE, _job([], kind="Job", name="r-pretrain"), "ADDED")  # by kind too


def test_a_deleted_job_recreated_under_its_name_is_seen_afresh():
    views = JobViews()
    views.created(NAMESPACE, _job([]))
    assert views.changed(NAMESPACE, _job([]), "DELETED")
    assert views.changed(NAMESPACE, _job([]), "ADDED")


def test_differs_answers_as_changed_would_and_records_nothing():
    views = JobViews()
    views.created(NAMESPACE, _job([]))
    for conditions, event in [([], "ADDED"), (["Created"], "MODIFIED"), (["Created"], "DELETED")]:
        job = _job(conditions)
        said = views.differs(NAMESPACE, job, event)
        assert views.differs(NAMESPACE, job, event) == said  # nothing recorded
        assert views.changed(NAMESPACE, job, event) == said
