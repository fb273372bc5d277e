"""Launch commands rendered from the spec, and the launcher's exit codes."""

from __future__ import annotations

import signal

import pytest

from sobert_api import build_spec
from sobert_operator.cluster import ClusterConfig
from sobert_operator.launch import LaunchTarget, pretrain_command, torchrun_args
from sobert_operator.render.pretrain import render_pytorchjob
from sobert_trainer.torchrun import SHUTDOWN_MARGIN_S, exit_code_for, split_grace, worker_shutdown_timeout

LOCAL = build_spec(
    {
        "preset": "tiny",
        "name": "t",
        "data": {"posts": ["p"]},
        "storage": {"uri": "/s"},
        "parallel": {"procs_per_node": 2},
    }
)
MULTI = build_spec(
    {
        "preset": "base",
        "name": "b",
        "backend": "kubernetes",
        "data": {"posts": ["s3://dumps/Posts.xml"]},
        "storage": {"uri": "s3://bucket/sobert"},
        "parallel": {"nodes": 4, "procs_per_node": 8},
    }
)
CLUSTER = ClusterConfig.model_validate(
    {
        "trainer_image": "ghcr.io/sobert/trainer:0.1.0",
        "node_pools": {"h100": {"gpu_type": "h100", "gpus_per_node": 8}},
        "default_node_pool": "h100",
        "termination_grace_seconds": 600,
    }
)


def test_local_command_is_a_standalone_torchrun_with_a_grace_period():
    command = pretrain_command(LOCAL, "spec.json", "so-1", "/scratch", target=LaunchTarget.local, grace_seconds=300)
    assert command[:4] == ["python", "-m", "sobert_trainer.torchrun", "--grace-seconds=300"]
    assert "--nproc-per-node=2" in command and "--nnodes=1" in command and "--standalone" in command
    assert command[command.index("-m", 3) + 1] == "sobert_trainer.pretrain"


def test_cluster_command_leaves_the_rendezvous_to_the_operator():
    """An explicit rendezvous flag would beat the PET_* variables the training operator injects."""
    args = torchrun_args(MULTI, LaunchTarget.cluster)
    assert args == ["--nproc-per-node=8", "--nnodes=4"]
    assert not any(arg.startswith(("--rdzv", "--master", "--node-rank", "--node_rank", "--standalone")) for arg in args)


def test_a_local_launch_refuses_several_nodes():
    with pytest.raises(ValueError, match=r"parallel.nodes \(4\).*--backend kubernetes"):
        torchrun_args(MULTI, LaunchTarget.local)


def test_pod_grace_period_and_worker_shutdown_come_from_one_setting():
    job = render_pytorchjob(MULTI, CLUSTER, "so-1")
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        grace, rest = split_grace(pod["containers"][0]["command"][3:])
        assert grace == pod["terminationGracePeriodSeconds"] == 600
        assert rest[:2] == ["--nproc-per-node=8", "--nnodes=4"]
    assert worker_shutdown_timeout(600) == 600 - SHUTDOWN_MARGIN_S < 600
    assert worker_shutdown_timeout(5) == 1


@pytest.mark.parametrize(
    ("failures", "code"),
    [
        ([], 0),
        ([(10, 2), (10, 143)], 2),  # bad input on one rank; the other checkpointed on torchrun's SIGTERM
        ([(10, -signal.SIGKILL), (10, 143)], 137),  # the OOM killer: retryable
        ([(10, 1), (40, -signal.SIGKILL)], 1),  # a crash; the other rank outlived the grace period
        ([(10, 143), (10, 143)], 143),  # every rank checkpointed after SIGTERM
        ([(12, 2), (10, -signal.SIGTERM)], 143),  # the earliest failure is the cause
        # A crash on one rank; torchrun's SIGTERM reached the other before its handler was in place.
        ([(10, 1), (10, -signal.SIGTERM)], 1),
    ],
)
def test_exit_code_follows_the_first_failure(failures, code):
    assert exit_code_for(failures) == code


def test_grace_flag_must_lead_and_be_a_number():
    assert split_grace(["--grace-seconds=30", "--nnodes=1"]) == (30, ["--nnodes=1"])
    assert split_grace(["--nnodes=1", "x.py", "--grace-seconds=30"]) == (
        None,
        ["--nnodes=1", "x.py", "--grace-seconds=30"],
    )
    with pytest.raises(SystemExit, match="whole number"):
        split_grace(["--grace-seconds=soon"])
