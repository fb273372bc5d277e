"""Attention through torch's scaled_dot_product_attention computes what megatron-core's local
`DotProductAttention` computes: the same BERT model (same weights) built with either layer spec
gives the same masked-LM loss and the same gradients on a micro-batch with padding, and a fused
kernel is what runs (no [b, heads, s, s] score matrix is materialised)."""

from __future__ import annotations

import torch

from pretrain_runs import numerics_spec

SPEC = numerics_spec("t", "/s", {"posts": ["p"], "comments": []})  # tiny, dropout off


def _models():
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec

    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.attention import sdpa_layer_spec
    from sobert_trainer.pretrain.distributed import set_random_seed
    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    cpu_compat.install()
    set_random_seed(SPEC.train.seed)
    config = transformer_config(SPEC.model, tensor_parallel=1, bf16=False)
    reference = build_bert_model(SPEC.model, config, layer_spec=bert_layer_local_spec)
    sdpa = build_bert_model(SPEC.model, config, layer_spec=sdpa_layer_spec())
    sdpa.load_state_dict(reference.state_dict())
    return reference, sdpa


def _batch(seq: int = 128, batch: int = 4):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, SPEC.model.vocab_size, (batch, seq), generator=generator)
    padding = torch.ones(batch, seq, dtype=torch.long)
    padding[1, 90:] = 0  # two samples end in padding, one of them mostly
    padding[3, 20:] = 0
    labels = torch.randint(5, SPEC.model.vocab_size, (batch, seq), generator=generator)
    loss_mask = (torch.rand(batch, seq, generator=generator) < 0.15).float() * padding
    return tokens, padding, labels, loss_mask


def _loss_and_grads(model, batch):
    tokens, padding, labels, loss_mask = batch
    model.zero_grad()
    lm_loss, _ = model(tokens, padding, tokentype_ids=torch.zeros_like(tokens), lm_labels=labels)
    loss = (lm_loss.float() * loss_mask).sum() / loss_mask.sum()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_sdpa_attention_matches_the_local_spec_in_loss_and_gradients(one_rank):
    reference, sdpa = _models()
    batch = _batch()
    expected_loss, expected_grads = _loss_and_grads(reference, batch)
    loss, grads = _loss_and_grads(sdpa, batch)
    assert abs(loss - expected_loss) < 1e-5
    assert grads.keys() == expected_grads.keys() and len(grads) > 10
    worst = max(((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item() for n, g in expected_grads.items())
    assert worst < 1e-4, f"gradients differ by up to {worst:.2e} of their largest element"


def test_no_score_matrix_is_materialised(one_rank):
    """The local spec fills a [b * heads, s, s] buffer per layer; the SDPA spec never asks for one."""
    from megatron.core import parallel_state

    _, sdpa = _models()
    buffers = parallel_state.get_global_memory_buffer().buffer
    buffers.pop(("mpu", torch.float32), None)  # DotProductAttention's score buffer
    _loss_and_grads(sdpa, _batch())
    assert ("mpu", torch.float32) not in buffers


def test_a_micro_batch_without_padding_reaches_the_attention_with_no_mask(one_rank, monkeypatch):
    """Full samples (`dataset.FullLengthSamples`) collate as `padding_free`; the model then hands
    SDPA no mask (what lets a GPU run its flash kernel), and the loss and gradients are those of
    the masked path on the same micro-batch."""
    import numpy as np

    from sobert_trainer.pretrain import attention
    from sobert_trainer.pretrain.bert import per_token_loss
    from sobert_trainer.pretrain.dataset import collate

    _, sdpa = _models()
    tokens, _, labels, loss_mask = _batch()
    samples = [
        {"text": t.numpy(), "types": np.zeros_like(t.numpy()), "labels": lab.numpy(),
         "padding_mask": np.ones_like(t.numpy()), "loss_mask": m.long().numpy()}
        for t, lab, m in zip(tokens, labels, loss_mask, strict=True)
    ]  # fmt: skip
    full = collate(samples)
    assert full["padding_free"] is True
    masks = []
    real_forward = attention.F.scaled_dot_product_attention

    def seen(q, k, v, attn_mask=None, *args, **kwargs):
        masks.append(attn_mask)
        return real_forward(q, k, v, attn_mask, *args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", seen)

    def loss_and_grads(batch):
        sdpa.zero_grad()
        loss = (per_token_loss(sdpa, batch) * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in sdpa.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads(full)
    assert masks and all(mask is None for mask in masks)
    masks.clear()
    masked_loss, masked_grads = loss_and_grads({**full, "padding_free": False})
    assert masks and all(mask is not None for mask in masks)
    assert abs(loss - masked_loss) < 1e-6
    worst = max(((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item() for n, g in masked_grads.items())
    assert worst < 1e-5
    samples[2]["padding_mask"][100:] = 0
    assert collate(samples)["padding_free"] is False
