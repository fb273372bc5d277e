"""What this CUDA machine runs sobert with: `python environment.py OUT_JSON`.

Prints and writes: Python, torch, CUDA, the GPU; the imports pretraining needs (megatron-core and
its compiled dataset helper, pydantic, tokenizers, tensorboard), failing (exit 1) when one is
missing; whether the optional fused-kernel packages import (TransformerEngine, apex, apex's
`fused_weight_gradient_mlp_cuda`), and whether the trainer builds TransformerEngine layers here
(`model.use_transformer_engine`). A process of its own, so that the orchestrator never holds a
CUDA context (its memory would count in the runs' nvidia-smi figures).
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
from pathlib import Path

REQUIRED = (
    "megatron.core",
    "megatron.core.datasets.helpers_cpp",
    "pydantic",
    "tokenizers",
    "psutil",
    "yaml",
    "torch.utils.tensorboard",
)
OPTIONAL = ("transformer_engine", "apex", "fused_weight_gradient_mlp_cuda")


def _importable(name: str) -> str | None:
    """None when `name` imports, else why not."""
    try:
        importlib.import_module(name)
    except Exception as exc:  # a compiled extension that fails to load raises OSError, not ImportError
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def main() -> int:
    missing = {name: why for name in REQUIRED if (why := _importable(name)) is not None}
    for name, why in missing.items():
        print(f"missing: {name} ({why})")
    if missing:
        return 1
    import torch

    from sobert_trainer.pretrain.model import use_transformer_engine  # TE's layers can run here

    props = torch.cuda.get_device_properties(0)
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "megatron_core": importlib.import_module("megatron.core").__version__,
        "optional": {name: _importable(name) is None for name in OPTIONAL},
        "transformer_engine_layers": use_transformer_engine(),
    }
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
