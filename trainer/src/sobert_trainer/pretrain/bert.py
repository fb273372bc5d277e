"""sobert's megatron-core `BertModel`: the SDPA attention's mask shape, and the masked-LM head run
only where the loss is taken.

`BertModel.forward` (megatron-core core_v0.16.1, `models/bert/bert_model.py`) runs the LM head
(dense h x h, GeLU, LayerNorm) and the tied output layer (h x V) on every position, and the loss
then keeps the ~15% that are masked. At V = 50,000 and h = 768 the output layer alone is 2·h·V =
77 MFLOP per token forward, about a quarter of the base model's per-token work at seq 2,048, and
its [tokens, V] logits are the largest tensor of the step. Given `head_positions` (the masked
positions, computed by the data loader), this model gathers the encoder's output at those positions
before the head and scatters the per-token loss back to [b, s], zero elsewhere: the loss and every
gradient are the same (`tests/unit/test_masked_head.py`), without the unmasked positions' work.
MosaicBERT does the same ("sparse prediction").

The gather is an `index_select` on indices the loader built on the host, so it needs no host
sync (a boolean mask would: its size is data-dependent). Megatron's sequence parallelism splits
the encoder output along the sequence, so the head positions would index another rank's shard:
it is refused (sobert does not turn it on).
"""

from __future__ import annotations

import torch
from megatron.core.models.bert.bert_model import BertModel

from sobert_trainer.pretrain.attention import SdpaDotProductAttention


def head_positions(loss_mask: torch.Tensor) -> torch.Tensor:
    """Flat indices into the encoder's [s, b] output of the positions whose loss is taken."""
    return torch.nonzero(loss_mask.t().reshape(-1), as_tuple=False).squeeze(1)


def per_token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], masked_head: bool = True) -> torch.Tensor:
    """The per-token masked-LM loss [b, s] of `model` (a `SobertBertModel`, wrapped or not) on a
    collated micro-batch (`dataset.collate`): the LM head at the masked positions only, or, with
    `masked_head` False, on every position (the reference). A micro-batch without padding is
    given no attention mask, so the SDPA attention can run a flash kernel (`attention.py`)."""
    lm_loss, _ = model(
        batch["text"],
        None if batch.get("padding_free") else batch["padding_mask"],
        tokentype_ids=batch["types"],
        lm_labels=batch["labels"],
        head_positions=batch["head_positions"] if masked_head else None,
    )
    return lm_loss


class SobertBertModel(BertModel):
    """`BertModel` for the SDPA attention's mask, with the LM head computed at `head_positions` only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._selected: torch.Tensor | None = None
        self.encoder.register_forward_hook(self._gather_head_positions)

    def _sanity_check_attention_and_get_attn_mask_dimension(self) -> str:
        """`BertModel`'s version (megatron-core 0.16.1) chooses [b, 1, s, s] for the local
        `DotProductAttention` and asks TransformerEngine's version for any other attention; the
        SDPA attention takes the [b, 1, 1, s] key-padding mask TE gets."""
        core_attention = self.transformer_layer_spec.submodules.self_attention.submodules.core_attention
        if core_attention is SdpaDotProductAttention:
            return "b11s"
        return super()._sanity_check_attention_and_get_attn_mask_dimension()

    def bert_extended_attention_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """`BertModel`'s mask for the attention, or None for a micro-batch without padding (the
        attention then takes no mask)."""
        return None if attention_mask is None else super().bert_extended_attention_mask(attention_mask)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        tokentype_ids: torch.Tensor | None = None,
        lm_labels: torch.Tensor | None = None,
        head_positions: torch.Tensor | None = None,
    ):
        """`BertModel.forward`; with `lm_labels` and `head_positions` (`head_positions(loss_mask)`)
        the per-token loss is computed at those positions only and returned as [b, s], zero
        elsewhere."""
        if lm_labels is None or head_positions is None:
            return super().forward(input_ids, attention_mask, tokentype_ids=tokentype_ids, lm_labels=lm_labels)
        if self.config.sequence_parallel:
            raise ValueError("the masked-position LM head needs the whole sequence per rank: sequence_parallel off")
        batch, seq = lm_labels.shape
        # compute_language_model_loss takes labels [b, s] for logits [s, b, V]: here b = 1, s = n.
        selected_labels = lm_labels.t().reshape(-1).index_select(0, head_positions).unsqueeze(0)
        self._selected = head_positions
        try:
            loss, binary_logits = super().forward(
                input_ids, attention_mask, tokentype_ids=tokentype_ids, lm_labels=selected_labels
            )
        finally:
            self._selected = None
        full = loss.new_zeros(seq * batch).index_copy(0, head_positions, loss.reshape(-1))
        return full.view(seq, batch).t(), binary_logits

    def _gather_head_positions(self, _module, _args, output):
        """The encoder's [s, b, h] output at the selected positions, as [n, 1, h]."""
        if self._selected is None:
            return output
        return output.reshape(-1, output.shape[-1]).index_select(0, self._selected).unsqueeze(1)
