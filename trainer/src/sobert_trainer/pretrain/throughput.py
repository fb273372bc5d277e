"""Pretraining throughput as the paper prices it: real (non-padding) tokens, model FLOP/s, MFU.

The padding mask of each micro-batch is counted on the host as the batch is built (the batches
come from NumPy), so the count costs no device sync. `model_tflops_per_s_per_device` is the
model's training FLOPs per real token (`sobert_api.flops.pretraining_flops_per_token`: 6·N +
12·L·h·s, the LM head's matmuls at the masked tokens only) times real tokens per second over the
devices; `mfu` divides it by the device's dense BF16 peak, given
by the launcher from the price catalog (`--peak-tflops`), null where none is known (CPU runs).
Padding is computed on but is not useful work, so it counts in neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class TokenTally:
    """Sample slots and real tokens this rank has fed since the last `take`."""

    tokens: int = 0
    real_tokens: int = 0

    def counted(self, batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        for batch in batches:
            mask = batch["padding_mask"]
            self.tokens += mask.numel()
            self.real_tokens += int(mask.sum())
            yield batch

    def take(self) -> tuple[int, int]:
        taken = self.tokens, self.real_tokens
        self.tokens = self.real_tokens = 0
        return taken


def throughput_fields(
    tokens_per_s: float,
    real_token_fraction: float,
    flops_per_token: float,
    devices: int,
    peak_tflops: float | None,
) -> dict[str, float | None]:
    """The progress record's accounting fields from the step's throughput and the interval's
    real-token fraction (tokens counted since the previous record, over all data-parallel ranks)."""
    real_tokens_per_s = tokens_per_s * real_token_fraction
    tflops = real_tokens_per_s * flops_per_token / devices / 1e12
    return {
        "real_tokens_per_s": round(real_tokens_per_s, 1),
        "real_token_fraction": round(real_token_fraction, 5),
        "model_tflops_per_s_per_device": round(tflops, 4),
        "mfu": None if not peak_tflops else round(tflops / peak_tflops, 5),
    }
