"""Which container failed a stage, from pod statuses as the kubelet writes them."""

from __future__ import annotations

from sobert_operator.kube.failure import (
    FailedContainer,
    failed_containers,
    failure_status,
    failures_by_cause,
    first_with_log,
    last_error_line,
)


def first_failure(pods: list[dict]) -> FailedContainer | None:
    return next(iter(failures_by_cause(pods)), None)


def pod(name: str, *containers: dict, init: tuple[dict, ...] = ()) -> dict:
    return {
        "metadata": {"name": name},
        "status": {"containerStatuses": list(containers), "initContainerStatuses": list(init)},
    }


def ended(name: str, code: int, at: str, reason: str = "Error", key: str = "state", **extra) -> dict:
    return {"name": name, key: {"terminated": {"exitCode": code, "reason": reason, "finishedAt": at}}, **extra}


RUNNING = {"name": "pytorch", "state": {"running": {"startedAt": "2026-12-05T00:00:00Z"}}}


def test_the_first_permanent_exit_is_the_cause_not_the_ranks_stopped_after_it():
    pods = [
        pod("r-pretrain-worker-0", ended("pytorch", 143, "2026-12-05T00:00:09Z")),  # stopped after the master failed
        pod("r-pretrain-master-0", ended("pytorch", 1, "2026-12-05T00:00:05Z")),
        pod("r-pretrain-worker-1", ended("pytorch", 1, "2026-12-05T00:00:07Z")),
    ]
    found = first_failure(pods)
    assert found is not None and (found.pod, found.exit_code, found.previous) == ("r-pretrain-master-0", 1, False)


def test_the_causes_in_order_permanent_earliest_first_then_signals_latest_first():
    pods = [
        pod("w0", ended("pytorch", 143, "2026-12-05T00:00:09Z")),
        pod("w1", ended("pytorch", 137, "2026-12-05T00:00:11Z", "OOMKilled")),
        pod("m", ended("pytorch", 1, "2026-12-05T00:00:05Z")),
        pod("w2", ended("pytorch", 1, "2026-12-05T00:00:07Z")),
    ]
    assert [c.pod for c in failures_by_cause(pods)] == ["m", "w2", "w1", "w0"]


def test_a_cause_whose_pod_is_gone_gives_way_to_the_next_that_has_a_log():
    """The Training Operator deletes the pods it last saw running when the job failed: a rank that
    diverged with the master can lose its pod (and log) between the listing and the log read."""
    pods = [
        pod("w", ended("pytorch", 1, "2026-12-05T00:00:05Z")),
        pod("m", ended("pytorch", 1, "2026-12-05T00:00:06Z")),
    ]
    logs = {"m": "error: pretrain: the run diverged at step 3: non-finite gradients\n"}
    found = first_with_log(failures_by_cause(pods), lambda c: logs.get(c.pod))
    assert found is not None and (found[0].pod, found[1]) == ("m", logs["m"])
    unread = first_with_log(failures_by_cause(pods), lambda c: None)
    assert unread is not None and (unread[0].pod, unread[1]) == ("w", None)  # the cause, without its log
    assert first_with_log([], lambda c: "") is None


def test_a_signal_is_the_cause_only_when_nothing_exited_on_its_own():
    pods = [
        pod("a", ended("pytorch", 137, "2026-12-05T00:00:05Z", "OOMKilled")),
        pod("b", ended("pytorch", 137, "2026-12-05T00:00:08Z", "OOMKilled")),
    ]
    found = first_failure(pods)
    assert found is not None and (found.pod, found.reason) == ("b", "OOMKilled")  # the latest attempt


def test_a_restarted_container_and_an_init_container_are_read_too():
    restarted = {**RUNNING, **ended("pytorch", 2, "2026-12-05T00:00:03Z", key="lastState")}
    init = ended("init-pytorch", 1, "2026-12-05T00:00:01Z")
    found = failed_containers([pod("p", restarted, init=(init,))])
    assert {(c.container, c.exit_code, c.previous) for c in found} == {("pytorch", 2, True), ("init-pytorch", 1, False)}
    assert first_failure([pod("p", restarted, init=(init,))]).container == "init-pytorch"  # type: ignore[union-attr]


def test_nothing_failed_when_every_container_runs_or_succeeded():
    assert first_failure([pod("p", RUNNING, ended("side", 0, "2026-12-05T00:00:01Z", "Completed"))]) is None
    assert first_failure([{"metadata": {"name": "pending"}, "status": {}}]) is None


def test_the_status_entry_and_the_stages_own_error_line():
    found = first_failure([pod("m", ended("pytorch", 1, "2026-12-05T00:00:05Z"))])
    assert found is not None
    said = "error: pretrain: the run diverged at step 3: non-finite gradients"
    tail = f"pretrain step 2/40 loss 8.3\n{said}\ntorchrun: exit 1\n"
    assert failure_status(found, tail) == {
        "pod": "m",
        "container": "pytorch",
        "exitCode": 1,
        "reason": "Error",
        "finishedAt": "2026-12-05T00:00:05Z",
        "logTail": tail,
    }
    assert last_error_line(tail) == said
    assert last_error_line("no error here") is None and last_error_line(None) is None
