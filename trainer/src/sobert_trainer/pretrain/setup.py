"""Model, optimizer and LR schedule for a run, as Megatron-LM's `setup_model_and_optimizer` and
`train` (megatron/training/training.py, tag core_v0.16.1) assemble them from megatron-core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sobert_api.spec import RunSpec


@dataclass
class TrainingSetup:
    bert: Any  # the bare BertModel (checkpoints are its sharded state dict)
    model: Any  # DistributedDataParallel(Float16Module(bert)) as the schedule sees it
    optimizer: Any
    scheduler: Any


def setup_model_and_optimizer(spec: RunSpec, bf16: bool, device: torch.device) -> TrainingSetup:
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from sobert_trainer.pretrain.model import build_bert_model, place_model, transformer_config

    config = transformer_config(spec.model, spec.parallel.tensor_parallel, bf16=bf16)
    bert = build_bert_model(spec.model, config)
    model = DistributedDataParallel(
        config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=False
        ),
        place_model(bert, config, device),
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=spec.train.lr,
            min_lr=spec.train.min_lr,
            weight_decay=spec.train.weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.98,
            adam_eps=1e-6,
            clip_grad=spec.train.clip_grad,
            bf16=bf16,
        ),
        [model],
    )
    iters = spec.train_iters
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=spec.train.lr,
        min_lr=spec.train.min_lr,
        lr_warmup_steps=int(spec.train.warmup_fraction * iters),
        lr_decay_steps=iters,
        lr_decay_style="cosine",
        start_wd=spec.train.weight_decay,
        end_wd=spec.train.weight_decay,
        wd_incr_steps=iters,
        wd_incr_style="constant",
    )
    # The schedule's hooks, as `train` sets them: the loss is scaled by the optimizer's loss scale
    # before backward, and after the last micro-batch `finalize_model_grads` all-reduces (averages)
    # the gradients across data-parallel replicas. Without it every DP rank steps on its own
    # gradients and the replicas drift apart. (No `no_sync_func`: gradient reduction is not
    # overlapped with the backward pass here.)
    config.grad_scale_func = optimizer.scale_loss
    config.finalize_model_grads_func = finalize_model_grads
    return TrainingSetup(bert=bert, model=model, optimizer=optimizer, scheduler=scheduler)
