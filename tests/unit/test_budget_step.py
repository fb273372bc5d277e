"""The controller's budget step: which events a resync emits as the spend crosses thresholds."""

import pytest

from sobert_api import build_spec
from sobert_operator.kube.budget import budget_step

BUDGET = {"usd": 100, "warn_fraction": 0.8, "checkpoint_fraction": 0.95}


def _spec():
    doc = {"preset": "tiny", "name": "b", "data": {"posts": ["p"]}, "storage": {"uri": "/s"}, "budget": BUDGET}
    return build_spec(doc)


def _reasons(spent: float, previous: dict) -> list[str]:
    return [reason for reason, _ in budget_step(_spec(), spent, None, 1.0, previous).events]


@pytest.mark.parametrize(
    ("spent", "previous", "reasons"),
    [
        (50, {"action": "ok"}, []),
        (85, {"action": "ok"}, ["BudgetWarning"]),
        (90, {"action": "warn"}, []),
        (96, {"action": "warn"}, ["BudgetCheckpoint"]),
        (97, {"action": "checkpoint", "checkpointRequested": True}, []),
        (101, {"action": "checkpoint", "checkpointRequested": True}, ["BudgetExceeded"]),
        (102, {"action": "stop", "checkpointRequested": True}, []),
        (50, {"action": "stop", "checkpointRequested": True}, ["BudgetRaised"]),
        # One resync may cross several thresholds (a budget cut, a slow resync): each one is told,
        # in order, not only the last.
        (96, {"action": "ok"}, ["BudgetWarning", "BudgetCheckpoint"]),
        (101, {"action": "ok"}, ["BudgetWarning", "BudgetCheckpoint", "BudgetExceeded"]),
        (101, {"action": "warn"}, ["BudgetCheckpoint", "BudgetExceeded"]),
    ],
)
def test_each_threshold_crossed_is_an_event(spent, previous, reasons):
    assert _reasons(spent, previous) == reasons
