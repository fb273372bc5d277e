"""A bf16 run's masked-LM loss goes through megatron-core's fused cross-entropy, and it computes
what the unfused loss computes: the same model (same bf16 weights) built with and without the
fusion gives the same loss and gradients pointing the same way, to bf16 precision."""

from __future__ import annotations

import dataclasses

import torch

from pretrain_runs import numerics_spec

SPEC = numerics_spec("t", "/s", {"posts": ["p"], "comments": []})  # tiny, dropout off


def _loss_and_grads(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, SPEC.model.vocab_size, (4, 128), generator=generator)
    labels = torch.randint(5, SPEC.model.vocab_size, (4, 128), generator=generator)
    padding = torch.ones_like(tokens)
    padding[1, 90:] = 0
    model.zero_grad()
    lm_loss, _ = model(tokens, padding, tokentype_ids=torch.zeros_like(tokens), lm_labels=labels)
    loss = lm_loss.float().mean()
    loss.backward()
    return loss.item(), {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}


def test_fused_cross_entropy_matches_the_unfused_loss_in_bf16(one_rank):
    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.distributed import set_random_seed
    from sobert_trainer.pretrain.model import build_bert_model, place_model, transformer_config

    cpu_compat.install()
    set_random_seed(SPEC.train.seed)
    config = transformer_config(SPEC.model, tensor_parallel=1, bf16=True)
    assert config.cross_entropy_loss_fusion, "bf16 runs use the fused loss"
    assert not transformer_config(SPEC.model, tensor_parallel=1, bf16=False).cross_entropy_loss_fusion
    plain = dataclasses.replace(config, cross_entropy_loss_fusion=False)
    fused_bert, unfused_bert = build_bert_model(SPEC.model, config), build_bert_model(SPEC.model, plain)
    unfused_bert.load_state_dict(fused_bert.state_dict())
    # In bf16, wrapped as training wraps it (Float16Module).
    cpu = torch.device("cpu")
    fused, unfused = place_model(fused_bert, config, cpu), place_model(unfused_bert, plain, cpu)

    expected_loss, expected = _loss_and_grads(unfused)
    loss, grads = _loss_and_grads(fused)
    assert abs(loss - expected_loss) < 1e-2 * abs(expected_loss)
    assert grads.keys() == expected.keys() and len(grads) > 10
    for name, want in expected.items():
        cosine = torch.nn.functional.cosine_similarity(grads[name].flatten(), want.flatten(), dim=0).item()
        assert cosine > 0.99, f"{name}: gradient direction differs (cosine {cosine:.4f})"
