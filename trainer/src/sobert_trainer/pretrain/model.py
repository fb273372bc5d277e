"""Build the megatron-core BertModel that a RunSpec describes and place it for training."""

from __future__ import annotations

import importlib.util

import torch
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.transformer.transformer_config import TransformerConfig

from sobert_api.spec import ModelSpec, TransformerImpl


def use_transformer_engine() -> bool:
    """TransformerEngine's layers can run here: CUDA and TE installed."""
    if not torch.cuda.is_available():
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


class TransformerImplUnavailable(RuntimeError):
    """The spec asks for layers this process cannot build (a bad input: no retry changes it)."""


def resolve_transformer_impl(requested: TransformerImpl | None) -> TransformerImpl:
    """The layers a model is built with: `model.transformer_impl`, or TE where it can run.

    Megatron-LM's `--transformer-impl` defaults to transformer_engine; here the default follows
    what the process can run, so the same spec trains on the trainer image's GPUs and on a CPU.
    """
    usable = use_transformer_engine()
    if requested is None:
        return TransformerImpl.te if usable else TransformerImpl.local
    if requested is TransformerImpl.te and not usable:
        where = "no CUDA device" if not torch.cuda.is_available() else "transformer_engine does not import"
        raise TransformerImplUnavailable(
            f"model.transformer_impl is 'te' but TransformerEngine cannot run here ({where}); "
            "run on the trainer image with a GPU, or set model.transformer_impl: local"
        )
    return requested


def gradient_accumulation_fusion_available() -> bool:
    """megatron-core's fused weight-gradient accumulation can run: CUDA and Apex's
    `fused_weight_gradient_mlp_cuda`. Every linear of the model needs it, not only TE's: the LM
    head's dense layer and the output layer are megatron-core's local linears, which refuse the
    fusion without that extension (`ColumnParallelLinear.__init__`,
    megatron/core/tensor_parallel/layers.py, megatron-core 0.16.1)."""
    return torch.cuda.is_available() and importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None


def transformer_config(
    model: ModelSpec, tensor_parallel: int, bf16: bool, deterministic: bool = False
) -> TransformerConfig:
    cuda = torch.cuda.is_available()
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
        # Megatron-LM's default fusions, where they run: on CUDA (their kernels are compiled for it;
        # the unfused paths compute the same functions on a CPU). Bias-GeLU keeps the exact GeLU
        # (fusions.ExactGeluMLP); gradient-accumulation fusion needs Apex's extension.
        bias_dropout_fusion=cuda,
        bias_activation_fusion=cuda,
        gradient_accumulation_fusion=gradient_accumulation_fusion_available(),
        masked_softmax_fusion=False,
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


def layer_spec_for(impl: TransformerImpl):
    """The transformer layer spec of `impl`, its MLP fusing bias and exact GeLU (fusions.py).

    te: megatron-core's TE spec (TE's fused attention, LayerNorm fused into the next linear).
    local: megatron-core's local spec with attention through torch's `scaled_dot_product_attention`
    (attention.py).
    """
    from sobert_trainer.pretrain.fusions import with_exact_gelu_mlp

    if impl is TransformerImpl.te:
        from megatron.core.models.bert.bert_layer_specs import get_bert_layer_with_transformer_engine_spec

        return with_exact_gelu_mlp(get_bert_layer_with_transformer_engine_spec())
    from sobert_trainer.pretrain.attention import sdpa_layer_spec

    return with_exact_gelu_mlp(sdpa_layer_spec())


def default_layer_spec(model: ModelSpec | None = None):
    """The layer spec of `model.transformer_impl` (TE where it can run, when unset)."""
    return layer_spec_for(resolve_transformer_impl(model.transformer_impl if model else None))


def build_bert_model(
    model: ModelSpec, config: TransformerConfig, padded_vocab: int | None = None, layer_spec=None
) -> BertModel:
    """Masked-LM BERT (no NSP head): pre-LayerNorm, learned absolute positions, tied output layer.

    `padded_vocab` overrides the embedding rows (conversion loads a checkpoint saved at another TP);
    `layer_spec` the transformer layer (default: `model.transformer_impl`'s, `default_layer_spec`).
    """
    from sobert_trainer.pretrain.bert import SobertBertModel

    return SobertBertModel(
        config=config,
        num_tokentypes=model.num_tokentypes,
        transformer_layer_spec=layer_spec or default_layer_spec(model),
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
