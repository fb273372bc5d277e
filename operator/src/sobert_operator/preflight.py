"""Checks before anything is created on a cluster: layout fits the pool, model fits the GPU."""

from __future__ import annotations

from sobert_api.loading import SpecError
from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig

# Usable device memory (GiB) per GPU type.
GPU_MEMORY_GIB = {"h100": 80, "h200": 141, "a100-80gb": 80, "a100": 40, "l40s": 48, "a10g": 24, "l4": 24, "v100": 32}
# Mixed-precision Adam with Megatron's non-distributed optimizer: bf16 weight (2) + fp32 main
# grad (4) + fp32 main weight (4) + Adam moments (8).
BYTES_PER_PARAM = 18


def memory_estimate_gib(spec: RunSpec) -> float:
    """Per-GPU memory: model/optimizer state split by TP, plus activations (Korthikanti et al. 2022:
    s*b*h*(34 + 5*a*s/h) bytes per layer, divided by TP) and the logits of the LM head."""
    m, tp = spec.model, spec.parallel.tensor_parallel
    s, b, h, a = m.seq_length, spec.train.micro_batch_size, m.hidden_size, m.num_attention_heads
    states = spec.model.parameter_count(tp) * BYTES_PER_PARAM / tp
    activations = m.num_layers * s * b * h * (34 + 5 * a * s / h) / tp
    logits = s * b * m.padded_vocab_size(tp) / tp * 4 * 2  # fp32 logits + their grad
    return (states + activations + logits) / 2**30


def preflight(spec: RunSpec, cluster: ClusterConfig) -> list[str]:
    """Reasons the run cannot be placed (empty when it can)."""
    try:
        pool_name, pool = cluster.pool(spec.placement.node_pool)
    except SpecError as exc:
        return [str(exc)]
    problems = []
    if spec.parallel.procs_per_node > pool.gpus_per_node:
        problems.append(
            f"parallel.procs_per_node ({spec.parallel.procs_per_node}) exceeds the {pool.gpus_per_node} GPUs per node "
            f"of node pool {pool_name!r}"
        )
    capacity = GPU_MEMORY_GIB.get(pool.gpu_type.lower())
    if capacity is not None:
        need = memory_estimate_gib(spec)
        if need > 0.9 * capacity:
            problems.append(
                f"estimated {need:.1f} GiB per GPU exceeds 90% of the {capacity} GiB of a {pool.gpu_type} "
                f"(lower train.micro_batch_size or raise parallel.tensor_parallel)"
            )
    return problems
