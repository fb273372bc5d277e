"""Parallel layouts checked against each other: the same global batch and seed, dropout off,
trained as DP=1, DP=2 (with and without the distributed optimizer and overlapped communication)
and TP=2 must give the same step-1 gradient norm, the same loss curve and the same validation
loss.

These are the tests that catch a missing gradient all-reduce (DP replicas that drift apart) and
a tensor-parallel model initialised differently from the one-rank model.
"""

from __future__ import annotations

import pytest

from pretrain_runs import (
    assert_same_curve,
    assert_same_grad_norm,
    first_grad_norm,
    loss_curve,
    numerics_spec,
    validation_curve,
)
from sobert_api import paths
from sobert_api.checkpoints import checkpoint_name, complete_checkpoints
from sobert_api.storage import Storage
from sobert_operator.local_executor import LocalExecutor
from sobert_operator.pipeline import Stage

pytestmark = pytest.mark.integration

LAYOUTS = {
    "dp1": {"procs_per_node": 1},
    # The default: distributed optimizer, gradient reduce-scatter and parameter all-gather overlapped.
    "dp2": {"procs_per_node": 2},
    # Plain data parallelism: a replicated optimizer, gradients all-reduced after the backward pass.
    "dp2-sync": {"procs_per_node": 2, "overlap_grad_reduce": False, "distributed_optimizer": False},
    "tp2": {"procs_per_node": 2, "tensor_parallel": 2},
}
TRAIN = {
    # The default layout also checkpoints on a timer (every step here), asynchronously (the
    # default): saving, in the background or not, does not touch the numerics.
    "dp2": {"checkpoint_interval_minutes": 1e-6},
    "dp2-sync": {"async_save": False},
}


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory, so_dump):
    """Each layout pretrained to the end (40 steps of 16 x 128 tokens) in one storage prefix."""
    root = tmp_path_factory.mktemp("layouts")
    specs = {}
    for name, parallel in LAYOUTS.items():
        spec = numerics_spec(name, str(root / "store"), so_dump, parallel=parallel, train=TRAIN.get(name, {}))
        executor = LocalExecutor(spec, root / "work", emit=lambda _l: None)
        if not executor.observe().dataset_published:
            executor.run_stage(Stage.prepare)
        executor.run_stage(Stage.pretrain)
        specs[name] = spec
    return specs


@pytest.mark.parametrize("layout", ["dp2", "dp2-sync", "tp2"])
def test_layout_matches_one_rank(layout_runs, layout):
    reference, spec = layout_runs["dp1"], layout_runs[layout]
    assert_same_grad_norm(first_grad_norm(spec), first_grad_norm(reference), f"{layout} vs dp1")
    curve = loss_curve(spec)
    assert len(curve) == spec.train_iters
    assert_same_curve(curve, loss_curve(reference), f"{layout} vs dp1")
    # The held-out loss: each layout's ranks share out the same samples, and the mean is over
    # every masked token, so it is the one-rank value.
    assert_same_curve(validation_curve(spec), validation_curve(reference), f"{layout} vs dp1, validation")


def test_reference_run_learns(layout_runs):
    curve = loss_curve(layout_runs["dp1"])
    assert curve[max(curve)] < curve[1] - 0.2
    held_out = validation_curve(layout_runs["dp1"])
    spec = layout_runs["dp1"]
    assert sorted(held_out) == list(range(spec.train.eval_interval, spec.train_iters + 1, spec.train.eval_interval))
    assert held_out[max(held_out)] < held_out[min(held_out)] - 0.2


@pytest.mark.parametrize(("layout", "sharding"), [("dp2", "dp_reshardable"), ("dp2-sync", None)])
def test_the_optimizer_state_is_sharded_over_data_parallel_ranks_by_default(layout_runs, layout, sharding, tmp_path):
    """The final checkpoint says which optimizer ran: the distributed one saves each rank's shard
    ('dp_reshardable'), the replicated one a plain torch optimizer state."""
    from megatron.core import dist_checkpointing

    spec = layout_runs[layout]
    checkpoints = Storage.open(spec.storage.uri).child(paths.pretrain_prefix(spec.name)).child("checkpoints")
    checkpoints.fetch_tree(checkpoint_name(spec.train_iters), tmp_path)
    optimizer = dist_checkpointing.load_common_state_dict(str(tmp_path))["optimizer"]
    assert optimizer.get("param_state_sharding_type") == sharding


def test_a_checkpoint_timer_saves_between_the_step_interval(layout_runs):
    """The tiny preset saves every 20 steps and keeps the last two; a timer that is always due saves
    every step, so the last two are the final steps (here saved asynchronously, one behind each step)."""
    timed, stepped = layout_runs["dp2"], layout_runs["dp2-sync"]
    iters = timed.train_iters

    def kept(spec):
        return complete_checkpoints(
            Storage.open(spec.storage.uri).child(paths.pretrain_prefix(spec.name)).child("checkpoints")
        )

    assert kept(stepped) == [iters - 20, iters]
    assert kept(timed) == [iters - 1, iters]
