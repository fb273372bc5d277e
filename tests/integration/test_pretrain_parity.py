"""Parallel layouts checked against each other: the same global batch and seed, dropout off,
trained as DP=1, DP=2 and TP=2 must give the same step-1 gradient norm and the same loss curve.

These are the tests that catch a missing gradient all-reduce (DP replicas that drift apart) and
a tensor-parallel model initialised differently from the one-rank model.
"""

from __future__ import annotations

import pytest

from pretrain_runs import assert_same_curve, assert_same_grad_norm, first_grad_norm, loss_curve, numerics_spec
from sobert_operator.local_executor import LocalExecutor
from sobert_operator.pipeline import Stage

pytestmark = pytest.mark.integration

LAYOUTS = {
    "dp1": {"procs_per_node": 1},
    "dp2": {"procs_per_node": 2},
    "tp2": {"procs_per_node": 2, "tensor_parallel": 2},
}


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory, so_dump):
    """Each layout pretrained to the end (40 steps of 16 x 128 tokens) in one storage prefix."""
    root = tmp_path_factory.mktemp("layouts")
    specs = {}
    for name, parallel in LAYOUTS.items():
        spec = numerics_spec(name, str(root / "store"), so_dump, parallel=parallel)
        executor = LocalExecutor(spec, root / "work", emit=lambda _l: None)
        if not executor.observe().dataset_published:
            executor.run_stage(Stage.prepare)
        executor.run_stage(Stage.pretrain)
        specs[name] = spec
    return specs


@pytest.mark.parametrize("layout", ["dp2", "tp2"])
def test_layout_matches_one_rank(layout_runs, layout):
    reference, spec = layout_runs["dp1"], layout_runs[layout]
    assert_same_grad_norm(first_grad_norm(spec), first_grad_norm(reference), f"{layout} vs dp1")
    curve = loss_curve(spec)
    assert len(curve) == spec.train_iters
    assert_same_curve(curve, loss_curve(reference), f"{layout} vs dp1")


def test_reference_run_learns(layout_runs):
    curve = loss_curve(layout_runs["dp1"])
    assert curve[max(curve)] < curve[1] - 0.2
