"""Time and profile sobert's own training step on one GPU, without its data pipeline. Under torchrun:

  python -m torch.distributed.run --standalone --nproc-per-node=1 profile_step.py \
      --preset base --micro-batch 8 --accumulation 4 --steps 6 [--peak-tflops P] --json OUT_JSON

Builds the model, DDP wrapper, distributed optimizer and schedule hooks with
`sobert_trainer.pretrain.setup.setup_model_and_optimizer` (the path `train.Trainer` takes), feeds
synthetic micro-batches collated by `pretrain.dataset.collate` (full length with no padding, as
`dataset.FullLengthSamples` gives nearly all of them, so `padding_free` is set and the attention
gets no mask; the masked-position LM head gets its host-computed positions), and runs
`train._forward_step` through megatron's no-pipelining schedule as the loop does. Reports the
classes the built model's first layer uses (its core attention, QKV projection, MLP and norm),
the optimizer, steady-state step time, tokens/s, model TFLOP/s and MFU at sobert's FLOPs per
token, torch's peak memory, and the CUDA time of one step split into GEMM / attention /
elementwise+norm+optimizer / communication / other from a torch.profiler trace.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIRST_TOKEN_ID = 7  # above the special tokens


def synthetic_samples(count: int, seq: int, vocab: int, mask_prob: float, rng: np.random.Generator) -> list[dict]:
    """Samples real to their end (no padding), `mask_prob` of their positions masked, in the
    arrays `masking.MegatronBertSamples` builds (after `FullLengthSamples`)."""
    samples = []
    for _ in range(count):
        text = rng.integers(FIRST_TOKEN_ID, vocab, size=seq, dtype=np.int64)
        chosen = rng.choice(np.arange(1, seq - 1), size=int(mask_prob * seq), replace=False)
        loss_mask = np.zeros(seq, dtype=np.int64)
        loss_mask[chosen] = 1
        labels = np.full(seq, -1, dtype=np.int64)
        labels[chosen] = text[chosen]
        samples.append(
            {
                "text": text,
                "types": np.zeros(seq, dtype=np.int64),
                "labels": labels,
                "padding_mask": np.ones(seq, dtype=np.int64),
                "loss_mask": loss_mask,
            }
        )
    return samples


ELEMENTWISE_WORDS = (
    "elementwise",
    "vectorized",
    "layer_norm",
    "layernorm",
    "triton",
    "reduce",
    "dropout",
    "gelu",
    "copy",
    "fill",
    "index",
    "softmax",
    "cross_entropy",
    "adam",
    "foreach",
)


def category(kernel: str) -> str:
    """Which part of the step a CUDA kernel belongs to, by its name."""
    name = kernel.lower()
    if "nccl" in name:
        return "communication"
    if any(word in name for word in ("fmha", "flash", "attention", "cudnn_generated", "sdpa", "attn")):
        return "attention"
    if any(word in name for word in ("gemm", "cutlass", "sm90_xmma", "cublas", "nvjet", "wgmma", "matmul")):
        return "gemm"
    if any(word in name for word in ELEMENTWISE_WORDS):
        return "elementwise/norm/optimizer"
    return "other"


LAYER_MODULES = {  # name: attribute path from a megatron-core TransformerLayer
    "core attention": "self_attention.core_attention",
    "QKV projection": "self_attention.linear_qkv",
    "MLP": "mlp",
    "MLP fc1": "mlp.linear_fc1",
    "input norm": "input_layernorm",
}


def layer_classes(bert: Any) -> dict[str, str]:
    """The classes the built model's first transformer layer runs: whatever layer spec
    `model.build_bert_model` chose, read from the model itself (`-` for a module it lacks)."""
    layer = bert.encoder.layers[0]
    classes = {}
    for name, path in LAYER_MODULES.items():
        module = layer
        for part in path.split("."):
            module = getattr(module, part, None)
        classes[name] = "-" if module is None else f"{type(module).__module__}.{type(module).__name__}"
    return classes


def build(args: argparse.Namespace):
    """The spec and `TrainingSetup` of `args.preset` at the asked micro-batch and accumulation."""
    from sobert_api.loading import build_spec
    from sobert_trainer.pretrain.distributed import RankInfo, current_device, init_distributed
    from sobert_trainer.pretrain.setup import setup_model_and_optimizer
    from sobert_trainer.pretrain.train import use_bf16

    spec = build_spec(
        {
            "name": "profile",
            "preset": args.preset,
            "storage": {"uri": "/tmp/sobert-profile-store"},
            "data": {"posts": ["unused"]},
            "train": {"micro_batch_size": args.micro_batch, "global_batch_size": args.micro_batch * args.accumulation},
        }
    )
    init_distributed(spec, RankInfo.from_env())
    return spec, setup_model_and_optimizer(spec, use_bf16(spec), current_device())


def step_function(spec, setup, pool: list[dict], args: argparse.Namespace) -> Callable[[], None]:
    """One optimizer step over the `pool` of micro-batches, as `Trainer.train_step` runs it."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from sobert_trainer.pretrain.train import _forward_step

    forward_backward = get_forward_backward_func()

    def step() -> None:
        setup.model.zero_grad_buffer()
        setup.optimizer.zero_grad()
        forward_backward(
            forward_step_func=_forward_step,
            data_iterator=iter(pool),
            model=[setup.model],
            num_microbatches=args.accumulation,
            seq_length=spec.model.seq_length,
            micro_batch_size=args.micro_batch,
            forward_only=False,
        )
        updated, _, _ = setup.optimizer.step()
        setup.after_step(updated)

    return step


def timed_steps(step: Callable[[], None], steps: int) -> tuple[float, list[float]]:
    """The first two steps' time (torch.compile, allocator warm-up), then each later step's."""
    began = time.monotonic()
    step()
    step()
    torch.cuda.synchronize()
    warmup = time.monotonic() - began
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.monotonic()
        step()
        torch.cuda.synchronize()
        times.append(time.monotonic() - t0)
    return warmup, times


def cuda_split(step: Callable[[], None]) -> tuple[dict[str, float], list[dict]]:
    """One step under torch.profiler: CUDA milliseconds per `category`, and the kernels by time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    by_category: dict[str, float] = defaultdict(float)
    rows = []
    for event in prof.key_averages():
        us = float(getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0) or 0)
        if event.device_type.name == "CUDA" and us > 0:
            by_category[category(event.key)] += us / 1e3
            rows.append({"ms": round(us / 1e3, 3), "count": event.count, "name": re.sub(r"\s+", " ", event.key)})
    rows.sort(key=lambda row: -row["ms"])
    return {k: round(v, 3) for k, v in by_category.items()}, rows[:20]


def profile(args: argparse.Namespace) -> dict:
    from sobert_api.flops import pretraining_flops_per_token
    from sobert_trainer.pretrain.dataset import collate

    spec, setup = build(args)
    m = spec.model
    rng = np.random.default_rng(0)
    vocab = min(m.vocab_size, 30_000)
    pool = [
        collate(synthetic_samples(args.micro_batch, m.seq_length, vocab, spec.train.mask_prob, rng))
        for _ in range(args.accumulation)
    ]
    pool = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in pool]
    assert all(batch["padding_free"] for batch in pool), "full-length samples: no micro-batch has padding"
    step = step_function(spec, setup, pool, args)
    setup.before_first_step()
    torch.cuda.reset_peak_memory_stats()
    warmup, times = timed_steps(step, args.steps)
    median = statistics.median(times)
    tokens = args.micro_batch * args.accumulation * m.seq_length
    tflops = tokens / median * pretraining_flops_per_token(m, spec.train.mask_prob) / 1e12
    categories, top = cuda_split(step)
    return {
        "preset": args.preset,
        "micro_batch": args.micro_batch,
        "accumulation": args.accumulation,
        "seq_length": m.seq_length,
        "steps": args.steps,
        "layer": layer_classes(setup.bert),
        "optimizer": [
            f"{type(o.optimizer).__module__}.{type(o.optimizer).__name__}" for o in setup.megatron_optimizers()
        ],
        "warmup_s": round(warmup, 2),
        "median_step_s": round(median, 5),
        "tokens_per_s": round(tokens / median, 1),
        "model_tflops_per_s": round(tflops, 2),
        "mfu": round(tflops / args.peak_tflops, 4) if args.peak_tflops else None,
        "max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "max_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "cuda_ms": round(sum(categories.values()), 2),
        "categories": categories,
        "top_kernels": top,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="Timed steps after two warm-up steps.")
    parser.add_argument("--peak-tflops", type=float, help="The GPU's dense BF16 peak, for the MFU.")
    parser.add_argument("--json", type=Path, required=True, help="Where the figures are written.")
    args = parser.parse_args()
    result = profile(args)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "top_kernels"}, indent=2))
    for row in result["top_kernels"]:
        print(f"  {row['ms']:9.3f} ms  x{row['count']:<5} {row['name'][:150]}")
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
