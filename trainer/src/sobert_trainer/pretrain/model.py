"""Build the megatron-core BertModel that a RunSpec describes and place it for training."""

from __future__ import annotations

import torch
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.transformer.transformer_config import TransformerConfig

from sobert_api.spec import ModelSpec


def use_transformer_engine() -> bool:
    """TransformerEngine layers where they can run (CUDA + TE installed); local layers otherwise."""
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def transformer_config(
    model: ModelSpec, tensor_parallel: int, bf16: bool, deterministic: bool = False
) -> TransformerConfig:
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        ffn_hidden_size=model.ffn_hidden_size,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        layernorm_epsilon=model.layernorm_epsilon,
        tensor_model_parallel_size=tensor_parallel,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        # The fused kernels need CUDA (and apex); the unfused paths compute the same functions.
        bias_dropout_fusion=torch.cuda.is_available(),
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        # megatron-core's fused masked-LM loss (fusions/fused_cross_entropy.py: one fused kernel
        # for the max, exp-sum and the gradient, where the unfused loss makes several passes over the
        # [tokens, vocab] logits). Its gradient is returned in bf16, so it is used for bf16 runs only.
        cross_entropy_loss_fusion=bf16,
        cross_entropy_fusion_impl="native",
        persist_layer_norm=False,
        apply_rope_fusion=False,
        deterministic_mode=deterministic,
        # The full weight of every tensor-parallel layer is initialised on the CPU from the seed and
        # then split per rank, so a model is the same whatever the TP degree (TP=2 checks against TP=1).
        use_cpu_initialization=True,
    )


def default_layer_spec():
    """TransformerEngine's layer spec where TE is installed; otherwise megatron-core's local spec
    with its attention computed by torch's fused `scaled_dot_product_attention` (attention.py)."""
    if use_transformer_engine():
        from megatron.core.models.bert.bert_layer_specs import get_bert_layer_with_transformer_engine_spec

        return get_bert_layer_with_transformer_engine_spec()
    from sobert_trainer.pretrain.attention import sdpa_layer_spec

    return sdpa_layer_spec()


def build_bert_model(
    model: ModelSpec, config: TransformerConfig, padded_vocab: int | None = None, layer_spec=None
) -> BertModel:
    """Masked-LM BERT (no NSP head): pre-LayerNorm, learned absolute positions, tied output layer.

    `padded_vocab` overrides the embedding rows (conversion loads a checkpoint saved at another TP);
    `layer_spec` the transformer layer (default: `default_layer_spec()`).
    """
    from sobert_trainer.pretrain.bert import SobertBertModel

    return SobertBertModel(
        config=config,
        num_tokentypes=model.num_tokentypes,
        transformer_layer_spec=layer_spec or default_layer_spec(),
        vocab_size=padded_vocab or model.padded_vocab_size(config.tensor_model_parallel_size),
        max_sequence_length=model.max_position_embeddings,
        share_embeddings_and_output_weights=True,
        add_binary_head=False,
        position_embedding_type="learned_absolute",
        parallel_output=True,
    )


def place_model(bert: BertModel, config: TransformerConfig, device: torch.device) -> torch.nn.Module:
    """The model on `device`, then in bf16 where the config asks, before any DDP wrapper.

    The order of Megatron-LM's `get_model` (megatron/training/training.py, tag core_v0.16.1: "GPU
    allocation", then "Fp16 conversion" with `Float16Module`, then DDP): with
    `use_cpu_initialization` the weights are built on the CPU and must be moved, or the optimizer
    rejects them on a GPU.
    """
    from megatron.core.transformer.module import Float16Module

    bert.to(device)
    module: torch.nn.Module = Float16Module(config, bert) if config.bf16 else bert
    check_placement(module, device, torch.bfloat16 if config.bf16 else torch.float32)
    return module


def check_placement(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Every parameter on `device` in `dtype`, or a RuntimeError naming the first few that are not."""
    wrong = [
        f"{name} ({param.device}, {param.dtype})"
        for name, param in module.named_parameters()
        if param.device != device or param.dtype != dtype
    ]
    if wrong:
        raise RuntimeError(
            f"{len(wrong)} parameter(s) not on {device} in {dtype}: {', '.join(wrong[:5])}"
            + (" ..." if len(wrong) > 5 else "")
        )
