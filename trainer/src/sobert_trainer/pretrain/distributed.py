"""Process groups, the training device and seeding, set up the way Megatron-LM's
`megatron/training/initialize.py` (tag core_v0.16.1: `_initialize_distributed`, `_set_random_seed`) does.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from sobert_api.spec import RunSpec
from sobert_trainer.pretrain import cpu_compat


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits, from the variables torchrun sets for each worker."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int

    @staticmethod
    def from_env() -> RankInfo:
        return RankInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            node_rank=int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0))),
        )


def current_device() -> torch.device:
    """The device this rank trains on: its GPU where CUDA is available, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def init_distributed(spec: RunSpec, ranks: RankInfo) -> None:
    """The default process group and megatron's TP x DP groups, then the seeds.

    Every group gets `parallel.distributed_timeout_minutes`: ranks wait at barriers while one rank
    per node downloads the dataset or a checkpoint, which takes far longer than torch's default
    (10 minutes for NCCL) at real sizes.
    """
    timeout = timedelta(minutes=spec.parallel.distributed_timeout_minutes)
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl", timeout=timeout)
    else:
        cpu_compat.install()
        dist.init_process_group("gloo", timeout=timeout)
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=spec.parallel.tensor_parallel,
        distributed_timeout_minutes=spec.parallel.distributed_timeout_minutes,
    )
    set_random_seed(spec.train.seed)


def set_random_seed(seed: int) -> None:
    """Python, numpy and torch seeded alike on every rank (so `use_cpu_initialization` builds the same
    full weights everywhere), then megatron's model-parallel RNG tracker (per-TP-rank streams for
    dropout inside tensor-parallel regions)."""
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
