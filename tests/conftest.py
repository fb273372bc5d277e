"""Shared test fixtures: paths to real data, megatron's parallel state; the testbed's servers come
from its plugin (testbed_plugin.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "tests" / "fixtures"
# What sobert ships for the Training Operator's worker init container (Pod Security `restricted`).
PYTORCH_INIT_CONTAINER = ROOT / "manifests" / "training-operator" / "pytorch-init-container.yaml"
sys.path.insert(0, str(ROOT / "tests"))
pytest_plugins = ["testbed_plugin"]


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data; skipped when absent, except under CI where it must exist."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI must run with ../shared beside the checkout")
        pytest.skip(f"{path} not present (real-data tests need ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def so_dump() -> dict[str, list[str]]:
    """The real StackOverflow + beer.stackexchange dump samples."""
    base = shared_path("stackoverflow_posts")
    return {
        "posts": [str(base / "stackoverflow.com-Posts.sample.xml"), str(base / "beer.stackexchange.com-Posts.xml")],
        "comments": [str(base / "stackoverflow.com-Comments.sample.xml")],
    }


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """A one-process gloo group and megatron's parallel state (TP=1), in the test process (unit
    tests that build megatron-core models)."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
    yield
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()
