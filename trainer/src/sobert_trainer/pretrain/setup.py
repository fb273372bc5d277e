"""Model, optimizer and LR schedule for a run, as Megatron-LM's `setup_model_and_optimizer` and
`train` (megatron/training/training.py, tag core_v0.16.1) assemble them from megatron-core."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sobert_api.spec import RunSpec


@dataclass
class TrainingSetup:
    bert: Any  # the bare BertModel (checkpoints are its sharded state dict)
    model: Any  # DistributedDataParallel(Float16Module(bert)) as the schedule sees it
    optimizer: Any
    scheduler: Any
    optimizer_sharded: bool = False  # the distributed optimizer
    overlap_param_gather: bool = False
    _gather_hooks_on: bool = field(default=True, init=False)

    # With the parameter all-gather overlapped, the updated weights reach each rank's model in the
    # next forward pass (a pre-hook per module). Megatron-LM's `train` (tag core_v0.16.1,
    # `should_disable_forward_pre_hook` and its uses) turns the hooks off until the first step has
    # run, and forces a synchronous gather before a checkpoint is saved; these three do the same.

    def before_first_step(self) -> None:
        if self.overlap_param_gather:
            self.model.disable_forward_pre_hook(param_sync=False)
            self._gather_hooks_on = False

    def after_step(self, updated: bool) -> None:
        if self.overlap_param_gather and updated and not self._gather_hooks_on:
            self.model.enable_forward_pre_hook()
            self._gather_hooks_on = True

    def gather_params(self) -> None:
        """Every rank's model holds the latest weights (before a save)."""
        if self.overlap_param_gather:
            self.model.start_param_sync(force_sync=True)

    def sharded_state(self, is_loading: bool) -> dict:
        """The model's and optimizer's sharded state dicts, for `dist_checkpointing` save and load.

        The distributed optimizer's state is 'dp_reshardable', as Megatron-LM's
        `_build_sharded_state_dict_metadata` (checkpointing.py, tag core_v0.16.1) asks by default:
        each rank writes and reads its own shard, with no gather on one rank."""
        metadata = {"distrib_optim_sharding_type": "dp_reshardable"} if self.optimizer_sharded else None
        model_sd = self.bert.sharded_state_dict()
        return {
            "model": model_sd,
            "optimizer": self.optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=metadata),
        }


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
    parallel = spec.parallel
    model = DistributedDataParallel(
        config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=parallel.overlap_grad_reduce,
            use_distributed_optimizer=parallel.distributed_optimizer,
            overlap_param_gather=parallel.overlap_param_gather,
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
            use_distributed_optimizer=parallel.distributed_optimizer,
            overlap_param_gather=parallel.overlap_param_gather,
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
    # the gradients across data-parallel replicas (with the distributed optimizer: reduce-scatters
    # them, each rank updating its shard). Without it every DP rank steps on its own gradients and
    # the replicas drift apart. With the reduction overlapped, the schedule holds it back for all
    # but the last micro-batch (`no_sync_func`) and starts it there (`grad_sync_func`, as
    # Megatron-LM's default --align-grad-reduce); `finalize_model_grads` then waits for the buckets.
    config.grad_scale_func = optimizer.scale_loss
    if parallel.overlap_grad_reduce:
        config.no_sync_func = model.no_sync
        config.grad_sync_func = model.start_grad_sync
    config.finalize_model_grads_func = finalize_model_grads
    return TrainingSetup(
        bert=bert,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        overlap_param_gather=parallel.overlap_param_gather,
        optimizer_sharded=parallel.distributed_optimizer,
    )
