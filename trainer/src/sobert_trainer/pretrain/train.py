"""PRETRAIN: megatron-core BERT masked-LM under torchrun. One process per rank.

Megatron's own machinery end to end: `parallel_state` for TP x DP groups, the local or
TransformerEngine layer spec, `DistributedDataParallel`, `get_megatron_optimizer`, the
`OptimizerParamScheduler`, the no-pipelining schedule from `get_forward_backward_func`, and
`dist_checkpointing`. Auto-resumes from the newest complete checkpoint; on SIGTERM it finishes
the step, checkpoints and exits with EXIT_PREEMPTED so an orchestrator restarts it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from sobert_api import paths
from sobert_api.spec import Precision, RunSpec
from sobert_trainer.pretrain import cpu_compat
from sobert_trainer.storage import Storage

log = logging.getLogger(__name__)

# Distinct from success and from a crash: "checkpointed on SIGTERM, restart me".
EXIT_PREEMPTED = 143


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    node_rank: int

    @staticmethod
    def from_env() -> RankInfo:
        return RankInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            node_rank=int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0))),
        )


class _StopFlag:
    """SIGTERM: checkpoint and exit. A new request object in storage (written by the budget policy of
    either executor, polled every log interval by rank 0): checkpoint now and go on. Both are
    checked between steps and agreed across ranks, so a step is never cut in half."""

    def __init__(self, requests: Storage | None = None, request_key: str = "") -> None:
        self.requested = False
        self.checkpoint = False
        self.requests, self.request_key, self.handled = requests, request_key, None
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum, _frame) -> None:
        self.requested = True

    def poll_storage(self) -> None:
        """A new checkpoint request in storage (its id differs from the last one handled)."""
        if self.requests is None or not self.requests.exists(self.request_key):
            return
        request = self.requests.read_json(self.request_key).get("id")
        if request != self.handled:
            self.handled, self.checkpoint = request, True

    def agreed(self) -> tuple[bool, bool]:
        """(stop, checkpoint now), the same on every rank."""
        flags = torch.tensor([float(self.requested), float(self.checkpoint)], device=_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.checkpoint = False
        return bool(flags[0].item()), bool(flags[1].item())


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def use_bf16(spec: RunSpec) -> bool:
    if spec.train.precision == Precision.auto:
        return torch.cuda.is_available()
    return spec.train.precision == Precision.bf16


def _init_distributed(spec: RunSpec, ranks: RankInfo) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl")
    else:
        cpu_compat.install()
        dist.init_process_group("gloo")
    from megatron.core import parallel_state, tensor_parallel

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=spec.parallel.tensor_parallel)
    tensor_parallel.model_parallel_cuda_manual_seed(spec.train.seed)


def _fetch_dataset(storage: Storage, dataset_id: str, workdir: Path, ranks: RankInfo) -> tuple[Path, dict]:
    local = workdir / "data" / dataset_id
    prefix = paths.dataset_prefix(dataset_id)
    if ranks.local_rank == 0:
        manifest = storage.read_manifest(prefix)
        if manifest is None:
            raise FileNotFoundError(f"{storage.uri(prefix)}: dataset not published (run `sobertctl data prepare`)")
        marker = local / ".fetched"
        if not marker.exists():
            storage.fetch_tree(prefix, local)
            marker.write_text(manifest["dataset_id"])
    dist.barrier()
    return local, storage.read_manifest(prefix)  # type: ignore[return-value]


def _loss_func(loss_mask: torch.Tensor, lm_loss: torch.Tensor):
    mask = loss_mask.float()
    loss = torch.sum(lm_loss.float() * mask) / mask.sum().clamp(min=1.0)
    # The schedule divides `loss` in place by the micro-batch count: log a copy.
    return loss, {"lm loss": loss.detach().clone()}


def _forward_step(data_iterator, model):
    batch = {k: v.to(_device(), non_blocking=True) for k, v in next(data_iterator).items()}
    lm_loss, _ = model(batch["text"], batch["padding_mask"], tokentype_ids=batch["types"], lm_labels=batch["labels"])
    return lm_loss, partial(_loss_func, batch["loss_mask"])


def _sharded_state(model, optimizer, is_loading: bool) -> dict:
    model_sd = model.sharded_state_dict()
    return {"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=is_loading)}


def train(spec: RunSpec, dataset_id: str, workdir: Path) -> int:
    """Run (or resume) pretraining; returns the process exit code."""
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer.module import Float16Module

    from sobert_trainer.pretrain.checkpoint import CheckpointStore
    from sobert_trainer.pretrain.dataset import build_train_dataset, micro_batches
    from sobert_trainer.pretrain.model import build_bert_model, transformer_config
    from sobert_trainer.pretrain.progress import ProgressLog

    launched = time.time()  # checkpoint requests older than this were satisfied by an earlier process
    ranks = RankInfo.from_env()
    stop = _StopFlag()
    _init_distributed(spec, ranks)
    bf16 = use_bf16(spec)
    tp, dp = spec.parallel.tensor_parallel, parallel_state.get_data_parallel_world_size()
    if tp * dp != dist.get_world_size():
        raise RuntimeError(
            f"torchrun world size {dist.get_world_size()} does not match the spec's TP x DP = {tp} x {dp}"
        )
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    run_storage = storage.child(paths.pretrain_prefix(spec.name))
    iters, seq, gbs, mbs = (
        spec.train_iters,
        spec.model.seq_length,
        spec.train.global_batch_size,
        spec.train.micro_batch_size,
    )

    data_dir, data_manifest = _fetch_dataset(storage, dataset_id, workdir, ranks)
    config = transformer_config(spec.model, tp, bf16=bf16)
    bert = build_bert_model(spec.model, config)
    module = Float16Module(config, bert) if bf16 else bert
    model = DistributedDataParallel(
        config,
        DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=False
        ),
        module,
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
    checkpoints = CheckpointStore(
        run_storage.child("checkpoints"), workdir / "checkpoints", ranks.node_rank, ranks.local_rank
    )
    start = checkpoints.latest_step() or 0
    if start:
        local, _ = checkpoints.fetch(start)
        state = dist_checkpointing.load(
            {**_sharded_state(bert, optimizer, is_loading=True), "train_state": None}, str(local)
        )
        bert.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["train_state"]["scheduler"])
        if ranks.rank == 0:
            log.info("pretrain: resumed from step %d", start)

    dataset, _ = build_train_dataset(
        data_dir, data_manifest, seq, num_samples=iters * gbs, mask_prob=spec.train.mask_prob, seed=spec.train.seed
    )
    progress = ProgressLog(run_storage, "progress.jsonl", workdir / "progress.jsonl") if ranks.rank == 0 else None
    if ranks.rank == 0:
        stop.requests, stop.request_key = storage, paths.checkpoint_request_key(spec.name)
        if storage.exists(stop.request_key):
            request = storage.read_json(stop.request_key)
            if request.get("time", 0) < launched:
                stop.handled = request.get("id")
    forward_backward = get_forward_backward_func()
    dp_rank = parallel_state.get_data_parallel_rank()
    accumulation = gbs // (mbs * dp)
    started = time.monotonic()

    def save(step: int) -> None:
        train_state = {"step": step, "consumed_samples": step * gbs, "scheduler": scheduler.state_dict()}
        sharded = {**_sharded_state(bert, optimizer, is_loading=False), "train_state": train_state}
        checkpoints.save(
            sharded,
            step,
            extra={
                "dataset_id": dataset_id,
                "run": spec.name,
                "tokens": step * gbs * seq,
                "tensor_parallel": tp,
                "world_size": dist.get_world_size(),
            },
        )

    step = start
    while step < iters:
        step_started = time.monotonic()
        model.zero_grad_buffer()
        optimizer.zero_grad()
        losses = forward_backward(
            forward_step_func=_forward_step,
            data_iterator=micro_batches(dataset, step, gbs, mbs, dp_rank, dp),
            model=[model],
            num_microbatches=accumulation,
            seq_length=seq,
            micro_batch_size=mbs,
            forward_only=False,
        )
        updated, grad_norm, _ = optimizer.step()
        scheduler.step(increment=1)
        step += 1
        loss = torch.stack([item["lm loss"] for item in losses]).mean().to(_device())
        dist.all_reduce(loss, group=parallel_state.get_data_parallel_group())
        step_time = time.monotonic() - step_started
        if step % spec.train.log_interval == 0 or step == iters or step == start + 1:
            record = {
                "step": step,
                "train_iters": iters,
                "consumed_tokens": step * gbs * seq,
                "loss": round(loss.item() / dp, 5),
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": None if grad_norm is None else round(float(grad_norm), 5),
                "skipped": not updated,
                "step_time_s": round(step_time, 4),
                "tokens_per_s": round(gbs * seq / step_time, 1),
                "wall_time_s": round(time.monotonic() - started, 3),
                "world_size": dist.get_world_size(),
            }
            if progress:
                stop.poll_storage()
                progress.write(**record)
                print(
                    f"pretrain step {step}/{iters} loss {record['loss']:.4f} "
                    f"{record['tokens_per_s']:,.0f} tok/s lr {record['lr']:.2e}",
                    flush=True,
                )
        preempted, asked = stop.agreed()
        if step % spec.train.checkpoint_interval == 0 or step == iters or preempted or asked:
            save(step)
            if ranks.rank == 0:
                log.info("pretrain: checkpoint at step %d", step)
        if preempted:
            if ranks.rank == 0:
                print(f"pretrain: SIGTERM received; checkpointed step {step}, exiting", flush=True)
            dist.destroy_process_group()
            return EXIT_PREEMPTED
    dist.barrier()
    dist.destroy_process_group()
    return 0
