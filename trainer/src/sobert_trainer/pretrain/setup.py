"""Model, optimizer and LR schedule for a run, as Megatron-LM's `setup_model_and_optimizer` and
`train` (megatron/training/training.py, tag core_v0.16.1) assemble them from megatron-core."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Around a validation pass, as Megatron-LM's `train` brackets `evaluate`: with the gather
        overlapped, the pre-hooks off (gathering the latest weights first) and back on after;
        dropout off."""
        hooks = self.overlap_param_gather and self._gather_hooks_on
        if hooks:
            self.model.disable_forward_pre_hook(param_sync=True)
        self.model.eval()
        try:
            yield
        finally:
            self.model.train()
            if hooks:
                self.model.enable_forward_pre_hook()

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
        if is_loading and self.optimizer_sharded:
            self._allocate_optimizer_state()
        model_sd = self.bert.sharded_state_dict()
        return {
            "model": model_sd,
            "optimizer": self.optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=metadata),
        }

    def load(self, state: dict) -> None:
        """The model's and optimizer's state from a loaded `sharded_state(is_loading=True)`.

        Without autograd: in an fp32 run the distributed optimizer's main weights are views of the
        model's, and the load copies into them in place."""
        with torch.no_grad():
            self.bert.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.optimizer_sharded:
            self._restore_optimizer_steps()

    def megatron_optimizers(self) -> list:
        """The megatron-core optimizers `get_megatron_optimizer` returned: those a ChainedOptimizer
        holds, or the one."""
        return list(getattr(self.optimizer, "chained_optimizers", [self.optimizer]))

    def _restore_optimizer_steps(self) -> None:
        """Each parameter's Adam `step` as the checkpoint saved it, in a tensor of its own.

        Where neither TransformerEngine nor Apex is installed, the distributed optimizer runs torch's
        Adam, which counts steps per parameter; megatron-core 0.16.1 saves the count in each
        parameter group (`DistributedOptimizer.state_dict`, "Extract 'step', for non-Apex/TE
        support") and on load (1) gives every parameter's state the same step tensor, which torch
        keeps as given (`Optimizer._process_value_according_to_param_policy`), so Adam would add 1
        to it once per parameter per step, and (2) then copies the state of the moment
        `sharded_state(is_loading=True)` was built over it (`_set_main_param_and_optimizer_states`
        copies every state key, 'step' included: here the 1 of `_allocate_optimizer_state`).
        Either way every bias correction after a resume is off. The parameter groups hold the
        saved count; each parameter gets it back in its own tensor. (TE's and Apex's Adam keep
        the step in the parameter group and have neither problem.)"""
        for optimizer in self.megatron_optimizers():
            inner = optimizer.optimizer
            for group in inner.param_groups:
                if "step" not in group:
                    continue
                for param in group["params"]:
                    if isinstance(inner.state[param].get("step"), torch.Tensor):
                        inner.state[param]["step"] = torch.tensor(float(group["step"]), dtype=torch.float32)

    def _allocate_optimizer_state(self) -> None:
        """Give the distributed optimizer's inner Adam its state before a checkpoint is loaded into it.

        Its `sharded_state_dict` reads the state's 'step' first; torch's Adam (used where neither
        TransformerEngine nor Apex is installed, as on CPU) has no state before its first step, so
        loading a fresh process would fail (`assert len(steps) == 1`, DistributedOptimizer.state_dict,
        megatron-core 0.16.1). megatron-core's other load paths allocate it with one zero-gradient
        step (`_init_optimizer_states_with_dummy_values`, called by `sharded_param_state_fsdp_dtensor`
        and `sharded_param_state_fully_reshardable`); the same here. Every value it touches (moments,
        step, main parameters) is then overwritten by the checkpoint's."""
        for optimizer in self.megatron_optimizers():
            if len(optimizer.optimizer.state) == 0:
                optimizer._init_optimizer_states_with_dummy_values()


def setup_model_and_optimizer(spec: RunSpec, bf16: bool, device: torch.device) -> TrainingSetup:
    """The model wrapped for data parallelism, its optimizer and LR schedule, and the schedule's
    hooks set on the model config, as Megatron-LM's `setup_model_and_optimizer` and `train` do."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.rerun_state_machine import (
        RerunMode,
        destroy_rerun_state_machine,
        initialize_rerun_state_machine,
    )

    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    # The machine the gradient check reports through: with reruns disabled it only validates (a
    # rejected NaN or Inf raises), as Megatron-LM's `--rerun-mode disabled` initialises it; afresh
    # for each model a process sets up.
    destroy_rerun_state_machine()
    initialize_rerun_state_machine(mode=RerunMode.DISABLED)
    config = transformer_config(spec.model, spec.parallel.tensor_parallel, bf16=bf16)
    bert = build_bert_model(spec.model, config)
    model = _data_parallel_model(spec, config, bert, device)
    optimizer = _optimizer(spec, bf16, model)
    # The schedule's hooks, as `train` sets them: the loss is scaled by the optimizer's loss scale
    # before backward, and after the last micro-batch `finalize_model_grads` all-reduces (averages)
    # the gradients across data-parallel replicas (with the distributed optimizer: reduce-scatters
    # them, each rank updating its shard). Without it every DP rank steps on its own gradients and
    # the replicas drift apart. With the reduction overlapped, the schedule holds it back for all
    # but the last micro-batch (`no_sync_func`) and starts it there (`grad_sync_func`, as
    # Megatron-LM's default --align-grad-reduce); `finalize_model_grads` then waits for the buckets.
    config.grad_scale_func = optimizer.scale_loss
    if spec.parallel.overlap_grad_reduce:
        config.no_sync_func = model.no_sync
        config.grad_sync_func = model.start_grad_sync
    config.finalize_model_grads_func = finalize_model_grads
    return TrainingSetup(
        bert=bert,
        model=model,
        optimizer=optimizer,
        scheduler=_scheduler(spec, optimizer),
        overlap_param_gather=spec.parallel.overlap_param_gather,
        optimizer_sharded=spec.parallel.distributed_optimizer,
    )


def _data_parallel_model(spec: RunSpec, config: Any, bert: Any, device: torch.device) -> Any:
    """megatron-core's DistributedDataParallel over the model placed on `device` (in bf16 when the
    config says so), gradients reduced in fp32. Each bucket's gradient norm is checked for NaN and
    Inf before it is reduced, as Megatron-LM does by default (`--check-for-nan-in-loss-and-grad`,
    on unless `--no-check-for-nan-in-loss-and-grad`; `get_model` in megatron/training/training.py,
    core_v0.16.1): a diverged run stops at the step it diverged (`train.DivergedError`) instead of
    training on NaN weights until its budget runs out."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    from sobert_trainer.pretrain.model import place_model

    parallel = spec.parallel
    return DistributedDataParallel(
        config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=parallel.overlap_grad_reduce,
            use_distributed_optimizer=parallel.distributed_optimizer,
            overlap_param_gather=parallel.overlap_param_gather,
            check_for_nan_in_grad=True,
        ),
        place_model(bert, config, device),
    )


def _optimizer(spec: RunSpec, bf16: bool, model: Any) -> Any:
    """Adam with RoBERTa's beta2 (0.98) and eps (1e-6), through `get_megatron_optimizer`."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    return get_megatron_optimizer(
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
            use_distributed_optimizer=spec.parallel.distributed_optimizer,
            overlap_param_gather=spec.parallel.overlap_param_gather,
        ),
        [model],
    )


def _scheduler(spec: RunSpec, optimizer: Any) -> Any:
    """Linear warm-up over `warmup_fraction` of the steps, then cosine decay to `min_lr` at the last."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    iters = spec.train_iters
    return OptimizerParamScheduler(
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
