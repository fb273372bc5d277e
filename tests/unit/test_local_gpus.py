"""This machine's GPUs for the embedded backend: product names from `nvidia-smi` (a stand-in
script on PATH here: the machine has none), their catalog models, and the peak the local
pretraining command passes so that a local GPU run logs its MFU."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sobert_operator.cost.catalog import load_catalog
from sobert_operator.cost.local_gpus import QUERY, catalog_model, gpu_names, local_peak_tflops

# Product names as `nvidia-smi --query-gpu=name` prints them, and the catalog model each is.
PRODUCTS = {
    "NVIDIA H100 80GB HBM3": "h100",
    "NVIDIA H200": "h200",
    "NVIDIA A100-SXM4-80GB": "a100-80gb",
    "NVIDIA A100-SXM4-40GB": "a100",
    "NVIDIA A100-PCIE-40GB": "a100",
    "NVIDIA L40S": "l40s",
    "NVIDIA L4": "l4",
    "NVIDIA A10G": "a10g",
    "Tesla V100-SXM2-32GB": "v100",
    "NVIDIA L40": None,  # not l4: models match whole words
    "NVIDIA GeForce RTX 4090": None,
}


@pytest.mark.parametrize(("product", "model"), PRODUCTS.items())
def test_product_names_map_to_their_catalog_models(product, model):
    assert catalog_model(product, load_catalog()) == model


def _nvidia_smi(directory: Path, script: str, monkeypatch) -> None:
    """`nvidia-smi` on PATH: a script that answers the query sobert asks, and nothing else."""
    tool = directory / "nvidia-smi"
    tool.write_text(f'#!/bin/sh\n[ "$1 $2" = "{" ".join(QUERY)}" ] || exit 9\n{script}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_the_listed_gpus_give_the_first_ones_peak(tmp_path, monkeypatch):
    _nvidia_smi(tmp_path, "printf 'NVIDIA H200\\nNVIDIA H200\\n'", monkeypatch)
    assert gpu_names() == ["NVIDIA H200", "NVIDIA H200"]
    assert local_peak_tflops(load_catalog()) == 989


def test_no_gpu_and_a_failing_tool_give_no_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert gpu_names() == [] and local_peak_tflops(load_catalog()) is None
    _nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed: no driver' >&2; exit 9", monkeypatch)
    assert gpu_names() == []
    assert local_peak_tflops(load_catalog(), ["NVIDIA GeForce RTX 4090"]) is None


def test_a_local_pretraining_run_on_a_gpu_is_given_its_peak(tmp_path, monkeypatch):
    """The command the embedded backend runs carries `--peak-tflops` for the GPU it found (the
    trainer's MFU is null without it), and none on a machine without one."""
    from sobert_api import build_spec
    from sobert_operator.local_executor import LocalExecutor
    from sobert_operator.pipeline import Stage

    posts = tmp_path / "Posts.xml"
    posts.write_text("<posts></posts>\n")
    spec = build_spec(
        {"preset": "tiny", "name": "r", "data": {"posts": [str(posts)]}, "storage": {"uri": str(tmp_path)}}
    )
    commands: list[list[str]] = []
    executor = LocalExecutor(spec, tmp_path / "work", emit=lambda _line: None)
    monkeypatch.setattr(executor, "_subprocess", lambda _stage, command, *_a, **_k: commands.append(command))
    _nvidia_smi(tmp_path, "echo 'NVIDIA H100 80GB HBM3'", monkeypatch)
    executor.run_stage(Stage.pretrain)
    monkeypatch.setenv("PATH", "/nonexistent")
    executor.run_stage(Stage.pretrain)
    on_gpu, on_cpu = commands
    assert "--peak-tflops=989" in on_gpu
    assert not [arg for arg in on_cpu if arg.startswith("--peak-tflops")]
