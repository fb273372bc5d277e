"""Self-attention through torch's fused `scaled_dot_product_attention` where TransformerEngine is
absent.

megatron-core's local layer spec computes attention as `DotProductAttention` does
(megatron/core/transformer/dot_product_attention.py, megatron-core 0.16.1): the full
[batch, heads, seq, seq] score matrix in memory, a masked softmax, a second batched matmul. At
sequence 2,048 that is 16.8M scores per head and micro-batch sample, written and read in HBM
three times, and the largest activation of the layer. TransformerEngine replaces it with its fused
(flash / cuDNN) attention; without TE, torch's `scaled_dot_product_attention` dispatches to a
flash or memory-efficient kernel on a GPU and to a fused CPU kernel here, never materialising the
scores. The result is the same function: `tests/unit/test_sdpa_attention.py` checks the model's
loss and gradients against the local spec's.

Masking. With the local spec BERT's mask (`BertModel.bert_extended_attention_mask`) is [b, 1, s, s],
True where a query or a key is padding, and `attention_mask_func` sets those scores to -10000
before the softmax. With this attention the model builds the [b, 1, 1, s] key-padding mask it
builds for TransformerEngine (`bert.SobertBertModel`), and a padding key gets -10000 added to its score.
For every query that is a real token the two are the same softmax; rows of padding queries differ
(they attend to the real tokens here, uniformly to everything there), and those rows reach
nothing: their labels are not in the loss and no real query attends to them.

Most micro-batches have no padding at all: samples are filled to the sequence length
(`dataset.FullLengthSamples`), and only the last sample of each ~1M-token Megatron document is
short. The loader says so on the host (`dataset.collate`'s `padding_free`), and such a micro-batch
reaches this attention with no mask (`bert.per_token_loss`), so SDPA may pick its flash kernel; a
bias, even an all-zero one, would hold a GPU to the memory-efficient kernel. Deciding from the
mask on the device instead would cost a host sync per layer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention

# attention_mask_func's fill value (megatron/core/transformer/utils.py, megatron-core 0.16.1)
MASKED_SCORE = -10000.0


class SdpaDotProductAttention(DotProductAttention):
    """`DotProductAttention` with the scores, softmax and context computed by one fused call."""

    def _sdpa_applies(self) -> bool:
        """Configurations `DotProductAttention` handles that this class does not express: a
        softmax offset, sliding windows, query-key layer scaling (its scale split across the
        matmul and the softmax). BERT uses none; they fall back to the parent."""
        config = self.config
        return (
            config.softmax_type == "vanilla" and config.window_size is None and not config.apply_query_key_layer_scaling
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type=None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if not self._sdpa_applies():
            return super().forward(query, key, value, attention_mask, attn_mask_type, attention_bias, packed_seq_params)
        assert packed_seq_params is None and attention_bias is None, "as DotProductAttention"
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        if groups > 1:  # grouped-query attention: repeat keys and values per query head
            key = key.repeat_interleave(groups, dim=2)
            value = value.repeat_interleave(groups, dim=2)
        # [s, b, np, hn] -> [b, np, s, hn]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        bias = None
        if attention_mask is not None:
            assert attention_mask.shape[-2] == 1, "a [b, 1, 1, s] key-padding mask (SobertBertModel)"
            bias = torch.zeros(attention_mask.shape, dtype=q.dtype, device=q.device)
            bias.masked_fill_(attention_mask, MASKED_SCORE)
        dropout = self.attention_dropout.p if self.training else 0.0
        if dropout and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                context = F.scaled_dot_product_attention(q, k, v, bias, dropout, scale=self.softmax_scale)
        else:
            context = F.scaled_dot_product_attention(q, k, v, bias, dropout, scale=self.softmax_scale)
        # [b, np, s, hn] -> [s, b, np * hn]
        context = context.permute(2, 0, 1, 3).contiguous()
        return context.view(*context.shape[:2], self.hidden_size_per_partition)


def sdpa_layer_spec():
    """megatron-core's local BERT layer spec (`bert_layer_local_spec`) with this attention."""
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec

    spec = copy.deepcopy(bert_layer_local_spec)
    spec.submodules.self_attention.submodules.core_attention = SdpaDotProductAttention
    return spec
