"""The model placed as the GPU path places it, checked parameter by parameter.

On this CPU machine the training device *is* the CPU, so a model left where it was built looks
placed; the `meta` device stands in for the GPU here: `place_model` must move every parameter
there and cast it to the training dtype before any wrapper sees it, as Megatron-LM's `get_model`
does (a bf16 model left on the CPU is what `get_megatron_optimizer` rejects on a GPU).
"""

from __future__ import annotations

import pytest
import torch

from sobert_api import build_spec

SPEC = build_spec({"preset": "tiny", "name": "t", "data": {"posts": ["p"]}, "storage": {"uri": "/s"}})


def build(bf16: bool):
    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    torch.manual_seed(SPEC.train.seed)
    config = transformer_config(SPEC.model, tensor_parallel=1, bf16=bf16)
    return build_bert_model(SPEC.model, config), config


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_every_parameter_is_on_the_device_in_the_training_dtype(one_rank, bf16, dtype):
    from sobert_trainer.pretrain.model import place_model

    bert, config = build(bf16)
    placed = place_model(bert, config, torch.device("meta"))
    params = dict(placed.named_parameters())
    assert len(params) == len(dict(bert.named_parameters())) > 10
    wrong = {name: (p.device, p.dtype) for name, p in params.items() if p.device.type != "meta" or p.dtype != dtype}
    assert not wrong


def test_a_model_left_where_it_was_built_is_refused(one_rank):
    """What the GPU path did before: Float16Module around a CPU-resident model."""
    from megatron.core.transformer.module import Float16Module

    from sobert_trainer.pretrain.model import check_placement

    bert, config = build(bf16=True)
    with pytest.raises(RuntimeError, match=r"parameter\(s\) not on meta in torch.bfloat16"):
        check_placement(Float16Module(config, bert), torch.device("meta"), torch.bfloat16)


def test_weights_do_not_depend_on_the_tensor_parallel_degree(one_rank):
    """The full weight is built on the CPU from the seed and split per rank: rank 0 of TP=2 holds the
    first half of the TP=1 weight (the megatron init a TP=2 vs TP=1 parity test relies on)."""
    from megatron.core.tensor_parallel.layers import _initialize_affine_weight_cpu

    from sobert_trainer.pretrain.model import transformer_config

    config = transformer_config(SPEC.model, tensor_parallel=1, bf16=False)
    assert config.use_cpu_initialization
    halves = []
    for world_size in (1, 2):
        torch.manual_seed(7)
        weight = torch.empty(256 // world_size, 64)
        _initialize_affine_weight_cpu(
            weight, 256, 64, 256 // world_size, 0, config.init_method, rank=0, world_size=world_size
        )
        halves.append(weight)
    assert torch.equal(halves[0][:128], halves[1])
