"""Megatron's fusions as sobert turns them on, each against its unfused path, and the layer
implementation a spec selects (`model.transformer_impl`).

- The fused bias + GeLU computes exact (erf) GeLU, as BERT and the converted Hugging Face model
  do, not megatron-core's tanh approximation: outputs and gradients equal `F.gelu(x + b)`'s, in
  fp32 and bf16, and differ from the approximation's.
- A whole BERT model with the fusion on gives the unfused model's loss and gradients.
- The fusions are on where their kernels run (CUDA; gradient accumulation also needs Apex's
  extension) and `transformer_impl` picks TE only where it can run, refusing it by name otherwise.
"""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from pretrain_runs import numerics_spec
from sobert_api.spec import TransformerImpl

SPEC = numerics_spec("t", "/s", {"posts": ["p"], "comments": []})  # tiny, dropout off


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_bias_gelu_is_the_exact_gelu_in_value_and_gradient(dtype):
    from sobert_trainer.pretrain.fusions import bias_gelu

    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 2, 256, generator=generator) * 3).to(dtype)
    bias = torch.randn(256, generator=generator).to(dtype)
    upstream = torch.randn(64, 2, 256, generator=generator).to(dtype)

    def run(fn):
        xs, bs = x.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        out = fn(xs, bs)
        out.backward(upstream)
        return out.detach().float(), xs.grad.float(), bs.grad.float()

    fused = run(bias_gelu)
    unfused = run(lambda a, b: F.gelu(a + b))
    approximate = run(lambda a, b: _tanh_gelu(a + b))
    tolerance = 1e-5 if dtype is torch.float32 else 2e-2
    for got, want in zip(fused, unfused, strict=True):
        scale = want.abs().max().clamp(min=1e-6)
        assert ((got - want).abs().max() / scale).item() < tolerance
    # The tanh approximation differs by far more than the tolerance in fp32: a test that the fused
    # kernel is not it.
    if dtype is torch.float32:
        assert (approximate[0] - unfused[0]).abs().max().item() > 1e-4


def _loss_and_grads(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, SPEC.model.vocab_size, (4, 128), generator=generator)
    labels = torch.randint(5, SPEC.model.vocab_size, (4, 128), generator=generator)
    model.zero_grad()
    lm_loss, _ = model(tokens, torch.ones_like(tokens), tokentype_ids=torch.zeros_like(tokens), lm_labels=labels)
    loss = lm_loss.float().mean()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_a_model_with_the_bias_gelu_fusion_matches_the_unfused_model(one_rank):
    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.distributed import set_random_seed
    from sobert_trainer.pretrain.fusions import ExactGeluMLP
    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    cpu_compat.install()
    set_random_seed(SPEC.train.seed)
    plain = transformer_config(SPEC.model, tensor_parallel=1, bf16=False)
    assert not plain.bias_activation_fusion, "off where its kernel does not run (no CUDA here)"
    fused_config = dataclasses.replace(plain, bias_activation_fusion=True)
    unfused, fused = build_bert_model(SPEC.model, plain), build_bert_model(SPEC.model, fused_config)
    fused.load_state_dict(unfused.state_dict())
    mlps = [m for m in fused.modules() if isinstance(m, ExactGeluMLP)]
    assert len(mlps) == SPEC.model.num_layers and all(m._fuses_bias_gelu(None) for m in mlps)

    expected_loss, expected = _loss_and_grads(unfused)
    loss, grads = _loss_and_grads(fused)
    assert abs(loss - expected_loss) < 1e-5
    assert grads.keys() == expected.keys() and len(grads) > 10
    worst = max(((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item() for n, g in expected.items())
    assert worst < 1e-4, f"gradients differ by up to {worst:.2e} of their largest element"


def test_fusions_are_on_where_their_kernels_run(monkeypatch):
    from sobert_trainer.pretrain import model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: None)
    assert not model.gradient_accumulation_fusion_available(), "Apex's extension is missing"
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: object())
    assert model.gradient_accumulation_fusion_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not model.gradient_accumulation_fusion_available()


def test_transformer_impl_picks_te_only_where_it_can_run(monkeypatch):
    from sobert_trainer.pretrain import model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model.resolve_transformer_impl(None) is TransformerImpl.local
    assert model.resolve_transformer_impl(TransformerImpl.local) is TransformerImpl.local
    with pytest.raises(model.TransformerImplUnavailable, match=r"model.transformer_impl is 'te'.*no CUDA device"):
        model.resolve_transformer_impl(TransformerImpl.te)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "transformer_engine", None)  # import fails
    with pytest.raises(model.TransformerImplUnavailable, match="transformer_engine does not import"):
        model.resolve_transformer_impl(TransformerImpl.te)
    monkeypatch.setitem(sys.modules, "transformer_engine", types.ModuleType("transformer_engine"))
    assert model.resolve_transformer_impl(None) is TransformerImpl.te
    assert model.resolve_transformer_impl(TransformerImpl.local) is TransformerImpl.local, "local is always allowed"


def test_the_local_layer_spec_has_sdpa_attention_and_the_exact_gelu_mlp():
    from sobert_trainer.pretrain.attention import SdpaDotProductAttention
    from sobert_trainer.pretrain.fusions import ExactGeluMLP
    from sobert_trainer.pretrain.model import layer_spec_for

    spec = layer_spec_for(TransformerImpl.local)
    assert spec.submodules.self_attention.submodules.core_attention is SdpaDotProductAttention
    assert spec.submodules.mlp.module is ExactGeluMLP
