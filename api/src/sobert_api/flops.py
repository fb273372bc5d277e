"""Training FLOPs of a BERT encoder, per token (the forecast's numerator).

Per token: 6·N for the dense matmuls (2 forward + 4 backward per parameter; Kaplan et al. 2020)
plus 12·L·h·s for attention scores and values (QK^T and AV, forward + backward: Narayanan et
al. 2021). The embedding lookups are not matmuls; the tied LM-head projection is (V·h), so N
counts it once, through the word-embedding table.

Pretraining runs the masked-LM head (its h·h dense layer and the V·h projection) only at the
masked positions (trainer `pretrain/bert.py`), so its matmuls count for `head_fraction` of the
tokens: the masking probability. Counting them for every token would credit the run with work
it does not do and overstate its MFU by ~25% for the base preset at seq 2,048.
"""

from __future__ import annotations

from sobert_api.spec import ModelSpec


def lm_head_matmul_parameters(model: ModelSpec) -> int:
    """The weights of the masked-LM head's matmuls: its dense h x h layer and the tied V x h output."""
    return model.hidden_size * model.hidden_size + model.padded_vocab_size() * model.hidden_size


def flops_per_token(model: ModelSpec, seq_length: int | None = None, head_fraction: float = 1.0) -> float:
    """Training FLOPs per token, the LM head's counted for `head_fraction` of the tokens."""
    s = seq_length or model.seq_length
    head = lm_head_matmul_parameters(model)
    dense = 6 * (model.parameter_count() - head) + 6 * head * head_fraction
    attention = 12 * model.num_layers * model.hidden_size * s
    return float(dense + attention)


def pretraining_flops_per_token(model: ModelSpec, mask_prob: float, seq_length: int | None = None) -> float:
    """Per real token of masked-LM pretraining: the head runs on the `mask_prob` share that is masked."""
    return flops_per_token(model, seq_length, head_fraction=mask_prob)


def forward_flops_per_token(model: ModelSpec, seq_length: int | None = None) -> float:
    """Inference only (evaluation passes): a third of training."""
    return flops_per_token(model, seq_length) / 3
