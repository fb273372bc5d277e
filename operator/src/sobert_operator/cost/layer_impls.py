"""Expected MFU by layer implementation: the price catalog's figure is TransformerEngine's.

A GPU model's `expectedMfu` in the catalog assumes TE's layers, which the trainer image runs
(TE's fused attention, LayerNorm fused into the next linear). Without TE (`model.transformer_impl:
local`) attention goes through torch's SDPA: its flash kernel for a micro-batch without padding
(most of them: samples are filled to the sequence length), its memory-efficient kernel when a
mask must be passed. Those kernels are slower than TE's fused attention, so the MFU falls by how
much of the model's FLOPs attention is, more for base than for large:

    factor = OTHER_FUSIONS / ((1 - a) + a / speed)

`a` is attention's share of the model's FLOPs per token (`sobert_api.flops`: 12·L·h·s of the total),
`speed` the attention kernel's speed relative to TE's fused attention, and OTHER_FUSIONS what the
local layers lose elsewhere (LayerNorm not fused into the linear that follows). docs/cost.md
gives each value and its source. All are estimates until a GPU measures them (`make bench-gpu`);
`sobertctl estimate --mfu` replaces the whole guess.
"""

from __future__ import annotations

from enum import StrEnum

from sobert_api.flops import pretraining_flops_per_token
from sobert_api.spec import ModelSpec, RunSpec, TransformerImpl


class AttentionPath(StrEnum):
    """The attention kernel a micro-batch reaches."""

    te_fused = "te-fused"  # TE's fused attention (cuDNN / flash): the catalog's assumption
    sdpa_flash = "sdpa-flash"  # local layers, a micro-batch without padding: no mask, SDPA's flash kernel
    sdpa_masked = "sdpa-masked"  # local layers, a micro-batch with padding: a bias, SDPA's memory-efficient kernel


# Attention kernel speed relative to TE's fused attention on Hopper, forward + backward, head
# dims 64-128, sequence 2k, BF16 (docs/cost.md "MFU by layer implementation").
ATTENTION_SPEED = {AttentionPath.te_fused: 1.0, AttentionPath.sdpa_flash: 0.65, AttentionPath.sdpa_masked: 0.35}
# What local layers lose outside attention: LayerNorm not fused into the next linear (TE's
# LayerNormLinear), a few percent of a step.
OTHER_FUSIONS = {TransformerImpl.te: 1.0, TransformerImpl.local: 0.97}
# The path each implementation's micro-batches take: full samples leave ~94% of micro-batches at
# seq 2,048 without padding (BENCHMARKS.md "Real tokens per pretraining sample").
PATH_OF = {TransformerImpl.te: AttentionPath.te_fused, TransformerImpl.local: AttentionPath.sdpa_flash}


def forecast_transformer_impl(spec: RunSpec) -> TransformerImpl:
    """The layers a run's GPUs are forecast to run: the spec's, else TE (the trainer image has it)."""
    return spec.model.transformer_impl or TransformerImpl.te


def attention_flops_share(model: ModelSpec, mask_prob: float) -> float:
    """Attention's share (QK^T and AV, forward + backward) of the FLOPs per pretraining token."""
    attention = 12 * model.num_layers * model.hidden_size * model.seq_length
    return attention / pretraining_flops_per_token(model, mask_prob)


def mfu_factor(model: ModelSpec, mask_prob: float, impl: TransformerImpl, path: AttentionPath | None = None) -> float:
    """The catalog's (TE) expected MFU times this is `impl`'s, through `path` (default: impl's own)."""
    share = attention_flops_share(model, mask_prob)
    speed = ATTENTION_SPEED[path or PATH_OF[impl]]
    return OTHER_FUSIONS[impl] / ((1 - share) + share / speed)
