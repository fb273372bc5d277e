"""The LM head run only at the masked positions computes what the full head computes: the same
model on the same micro-batch (with padding, through the loader's collate and the training
wrappers) gives the same per-token loss at the masked positions, zero elsewhere, and the same
gradients, in fp32 and in bf16 (through megatron-core's fused cross-entropy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain_runs import numerics_spec

SPEC = numerics_spec("t", "/s", {"posts": ["p"], "comments": []})  # tiny, dropout off


def _micro_batch(seq: int = 128, batch: int = 4) -> dict[str, torch.Tensor]:
    from sobert_trainer.pretrain.dataset import collate

    rng = np.random.default_rng(0)
    samples = []
    for length in (seq, 90, seq, 20):  # two samples end in padding, one of them mostly
        padding = (np.arange(seq) < length).astype(np.int64)
        samples.append(
            {
                "text": rng.integers(5, SPEC.model.vocab_size, seq) * padding,
                "types": np.zeros(seq, dtype=np.int64),
                "labels": rng.integers(5, SPEC.model.vocab_size, seq),
                "padding_mask": padding,
                "loss_mask": (rng.random(seq) < 0.15).astype(np.int64) * padding,
            }
        )
    return collate(samples[:batch])


def _loss_and_grads(model, batch, masked_head: bool):
    model.zero_grad()
    from sobert_trainer.pretrain.bert import per_token_loss

    lm_loss = per_token_loss(model, batch, masked_head)
    mask = batch["loss_mask"].float()
    (lm_loss.float() * mask).sum().div(mask.sum()).backward()
    grads = {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}
    return lm_loss.detach().float(), grads


@pytest.mark.parametrize("bf16", [False, True])
def test_masked_head_gives_the_full_heads_loss_and_gradients(one_rank, bf16):
    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.distributed import set_random_seed
    from sobert_trainer.pretrain.model import build_bert_model, place_model, transformer_config

    cpu_compat.install()
    set_random_seed(SPEC.train.seed)
    config = transformer_config(SPEC.model, tensor_parallel=1, bf16=bf16)
    model = place_model(build_bert_model(SPEC.model, config), config, torch.device("cpu"))
    batch = _micro_batch()
    assert 20 < len(batch["head_positions"]) < batch["loss_mask"].numel() // 4

    expected_loss, expected_grads = _loss_and_grads(model, batch, masked_head=False)
    loss, grads = _loss_and_grads(model, batch, masked_head=True)

    masked = batch["loss_mask"].bool()
    assert loss.shape == expected_loss.shape
    assert torch.count_nonzero(loss[~masked]) == 0
    tolerance = 1e-2 if bf16 else 1e-5
    assert torch.allclose(loss[masked], expected_loss[masked], rtol=tolerance, atol=tolerance)
    assert grads.keys() == expected_grads.keys() and len(grads) > 10
    worst = max(((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item() for n, g in expected_grads.items())
    assert worst < (2e-2 if bf16 else 1e-4), f"gradients differ by up to {worst:.2e} of their largest element"
