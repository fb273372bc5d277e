"""The GPUs of this machine, for the embedded backend: the product names `nvidia-smi` lists and
each one's model in the price catalog, so that a local pretraining run on a GPU reports its MFU
against that device's peak, as a cluster run does against its node pool's.

The operator imports nothing of the training stack (docs/architecture.md), so the driver's own
tool is asked, not torch.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from sobert_operator.cost.catalog import PriceCatalog

QUERY = ("--query-gpu=name", "--format=csv,noheader")


def gpu_names(timeout: float = 10.0) -> list[str]:
    """The product names of this machine's GPUs (`nvidia-smi`), none where the tool is missing or
    fails (no driver, no device)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        listed = subprocess.run([binary, *QUERY], capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def catalog_model(product: str, catalog: PriceCatalog) -> str | None:
    """The catalog's model for an NVIDIA product name: the longest key whose `-`-separated parts
    are all words of the name ("NVIDIA A100-SXM4-80GB" is `a100-80gb`, "NVIDIA H100 80GB HBM3"
    `h100`, "NVIDIA L40S" `l40s`, "NVIDIA L40" none); None for a GPU the catalog lacks."""
    words = set(re.split(r"[^a-z0-9]+", product.lower()))
    for key in sorted(catalog.gpus, key=len, reverse=True):
        if all(part in words for part in key.split("-")):
            return key
    return None


def local_peak_tflops(catalog: PriceCatalog, names: list[str] | None = None) -> float | None:
    """The dense BF16 peak of this machine's first GPU from the catalog (`names`: the listed
    products, default `gpu_names()`); None on a machine without one or with one the catalog lacks."""
    listed = gpu_names() if names is None else names
    model = catalog_model(listed[0], catalog) if listed else None
    return catalog.gpus[model].peak_tflops if model else None
