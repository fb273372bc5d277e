"""Training FLOPs of a BERT encoder, per token (the forecast's numerator).

Per token: 6·N for the dense matmuls (2 forward + 4 backward per parameter; Kaplan et al. 2020)
plus 12·L·h·s for attention scores and values (QK^T and AV, forward + backward: Narayanan et
al. 2021). The embedding lookups are not matmuls; the tied LM-head projection is (V·h), so N
counts it once, through the word-embedding table.
"""

from __future__ import annotations

from sobert_api.spec import ModelSpec


def flops_per_token(model: ModelSpec, seq_length: int | None = None) -> float:
    s = seq_length or model.seq_length
    dense = 6 * model.parameter_count()
    attention = 12 * model.num_layers * model.hidden_size * s
    return float(dense + attention)


def forward_flops_per_token(model: ModelSpec, seq_length: int | None = None) -> float:
    """Inference only (evaluation passes): a third of training."""
    return flops_per_token(model, seq_length) / 3
