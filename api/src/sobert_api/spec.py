"""The RunSpec: everything a sobert run needs, typed and validated in one place.

A RunSpec is what a user writes (YAML), what the CLI builds from flags, and what the
`SobertRun` custom resource carries as `.spec`. Every stage reads its slice of it; nothing
downstream re-validates or re-derives what is checked here.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class _Spec(BaseModel):
    # Unknown keys are typos, not extensions: reject them with the field's path.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformerImpl(StrEnum):
    """Which layers build the encoder (Megatron-LM's `--transformer-impl`)."""

    te = "te"  # TransformerEngine's: fused attention, LayerNorm fused into the next linear
    local = "local"  # megatron-core's local layers, attention through torch's SDPA


class ModelSpec(_Spec):
    """Architecture of the megatron-core BERT encoder (pre-LayerNorm, learned absolute positions)."""

    num_layers: Annotated[int, Field(gt=0, description="Transformer layers.")]
    hidden_size: Annotated[int, Field(gt=0, description="Model width h.")]
    num_attention_heads: Annotated[int, Field(gt=0, description="Attention heads; must divide hidden_size.")]
    ffn_hidden_size: Annotated[int, Field(gt=0, description="MLP inner width (4h in the presets).")]
    seq_length: Annotated[int, Field(gt=0, description="Tokens per training sequence.")]
    max_position_embeddings: Annotated[
        int, Field(gt=0, description="Learned position table size; must be >= seq_length.")
    ]
    vocab_size: Annotated[int, Field(ge=16, description="Tokenizer vocabulary size (before Megatron's padding).")]
    make_vocab_size_divisible_by: Annotated[
        int, Field(gt=0, description="Megatron pads the embedding table to a multiple of this x TP.")
    ] = 128
    num_tokentypes: Annotated[int, Field(ge=0, description="Token-type (segment) embeddings.")] = 2
    hidden_dropout: Annotated[float, Field(ge=0, lt=1, description="Dropout after attention/MLP.")] = 0.1
    attention_dropout: Annotated[float, Field(ge=0, lt=1, description="Dropout on attention probs.")] = 0.1
    layernorm_epsilon: Annotated[float, Field(gt=0, description="LayerNorm epsilon.")] = 1e-5
    transformer_impl: Annotated[
        TransformerImpl | None,
        Field(
            description="te: TransformerEngine's layers (the trainer image has TE; needs a GPU); local: "
            "megatron-core's local layers with torch SDPA attention; unset: te where TE imports and CUDA "
            "is present, else local."
        ),
    ] = None

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelSpec:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.num_attention_heads ({self.num_attention_heads}) must divide "
                f"model.hidden_size ({self.hidden_size})"
            )
        if self.seq_length > self.max_position_embeddings:
            raise ValueError(
                f"model.seq_length ({self.seq_length}) exceeds "
                f"model.max_position_embeddings ({self.max_position_embeddings})"
            )
        return self

    def padded_vocab_size(self, tensor_parallel: int = 1) -> int:
        """Embedding rows as Megatron allocates them (multiple of divisible_by x TP)."""
        multiple = self.make_vocab_size_divisible_by * tensor_parallel
        return math.ceil(self.vocab_size / multiple) * multiple

    def parameter_count(self, tensor_parallel: int = 1) -> int:
        """Closed-form count of megatron-core `BertModel` parameters (no binary head).

        Embeddings (word, position, token type) + per layer [pre-attn LN, QKV, proj,
        pre-MLP LN, fc1, fc2] + final LN + LM head (dense, LN, output bias; the output
        weight is tied to the word embeddings).
        """
        h, f, v = self.hidden_size, self.ffn_hidden_size, self.padded_vocab_size(tensor_parallel)
        embeddings = v * h + self.max_position_embeddings * h + self.num_tokentypes * h
        per_layer = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h)
        lm_head = (h * h + h) + 2 * h + v
        return embeddings + self.num_layers * per_layer + 2 * h + lm_head


class Precision(StrEnum):
    """Numeric format of the training step."""

    auto = "auto"  # bf16 where CUDA is available, fp32 on CPU
    bf16 = "bf16"
    fp32 = "fp32"


class ParallelSpec(_Spec):
    """How the job is laid out: nodes x processes per node, split into TP x DP."""

    nodes: Annotated[int, Field(ge=1, description="Machines (PyTorchJob replicas) for pretraining.")] = 1
    procs_per_node: Annotated[
        int, Field(ge=1, description="torchrun processes per node (GPUs per node, or CPU ranks).")
    ] = 1
    tensor_parallel: Annotated[int, Field(ge=1, description="Tensor-model-parallel degree.")] = 1
    distributed_timeout_minutes: Annotated[
        int,
        Field(
            ge=1,
            description="How long a rank waits in a collective or barrier before the job fails, e.g. while "
            "one rank per node downloads the dataset or a checkpoint (Megatron's --distributed-timeout-minutes).",
        ),
    ] = 60
    overlap_grad_reduce: Annotated[
        bool,
        Field(
            description="Reduce gradients bucket by bucket while the backward pass runs, not after it "
            "(Megatron's --overlap-grad-reduce)."
        ),
    ] = True
    distributed_optimizer: Annotated[
        bool,
        Field(
            description="Shard the optimizer state and fp32 main weights over data-parallel ranks (ZeRO-1, "
            "Megatron's --use-distributed-optimizer); with overlap_grad_reduce the updated weights are "
            "all-gathered during the next forward pass (--overlap-param-gather)."
        ),
    ] = True

    @property
    def overlap_param_gather(self) -> bool:
        """Megatron allows --overlap-param-gather only with the distributed optimizer and
        --overlap-grad-reduce (megatron/training/arguments.py, tag core_v0.16.1, `validate_args`)."""
        return self.distributed_optimizer and self.overlap_grad_reduce

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def data_parallel(self) -> int:
        return self.world_size // self.tensor_parallel

    @model_validator(mode="after")
    def _check_layout(self) -> ParallelSpec:
        if self.world_size % self.tensor_parallel:
            raise ValueError(
                f"parallel.tensor_parallel ({self.tensor_parallel}) must divide the world size "
                f"nodes x procs_per_node = {self.world_size}"
            )
        if self.tensor_parallel > self.procs_per_node:
            raise ValueError(
                f"parallel.tensor_parallel ({self.tensor_parallel}) must fit inside one node "
                f"(procs_per_node = {self.procs_per_node}); tensor parallelism across nodes is "
                "bandwidth-bound"
            )
        return self


class TrainSpec(_Spec):
    """Masked-LM pretraining schedule."""

    global_batch_size: Annotated[int, Field(gt=0, description="Sequences per optimizer step.")]
    micro_batch_size: Annotated[int, Field(gt=0, description="Sequences per forward pass per rank.")]
    train_tokens: Annotated[int, Field(gt=0, description="Token budget; train_iters is derived.")]
    lr: Annotated[float, Field(gt=0, description="Peak learning rate.")] = 1e-4
    min_lr: Annotated[float, Field(ge=0, description="Floor of the cosine decay.")] = 1e-5
    warmup_fraction: Annotated[float, Field(ge=0, lt=1, description="Linear warmup share.")] = 0.01
    weight_decay: Annotated[float, Field(ge=0, description="AdamW weight decay.")] = 0.01
    clip_grad: Annotated[float, Field(ge=0, description="Gradient norm clip; 0 disables.")] = 1.0
    mask_prob: Annotated[float, Field(gt=0, lt=1, description="Share of tokens masked.")] = 0.15
    seed: Annotated[int, Field(ge=0, description="Seed for init, data order and masking.")] = 1234
    precision: Annotated[Precision, Field(description="auto: bf16 on GPU, fp32 on CPU.")] = Precision.auto
    checkpoint_interval: Annotated[int, Field(gt=0, description="Save every K optimizer steps.")] = 1000
    checkpoint_interval_minutes: Annotated[
        float | None,
        Field(
            gt=0,
            description="Also save once this many minutes have passed since the last save (rank 0's clock, "
            "agreed between steps); unset: by steps only. Bounds the work a preemption without notice loses.",
        ),
    ] = None
    log_interval: Annotated[int, Field(gt=0, description="progress.jsonl line every K steps.")] = 10
    async_save: Annotated[
        bool,
        Field(
            description="Write periodic checkpoints from a forked process while training goes on, and upload them "
            "on a background thread (Megatron-LM's --async-save); the save a run ends or stops with is waited for.",
        ),
    ] = True
    loader_workers: Annotated[
        int,
        Field(ge=0, description="Processes per rank building (masking) micro-batches ahead of the step; 0: inline."),
    ] = 2

    eval_interval: Annotated[
        int,
        Field(
            ge=0,
            description="Validation loss every K optimizer steps and after the last (Megatron-LM's "
            "--eval-interval); 0: never.",
        ),
    ] = 1000
    eval_iters: Annotated[
        int,
        Field(
            gt=0,
            description="Global batches of held-out samples each validation averages over, the same ones every "
            "time (Megatron-LM's --eval-iters).",
        ),
    ] = 10

    def train_iters(self, seq_length: int) -> int:
        return max(1, math.ceil(self.train_tokens / (self.global_batch_size * seq_length)))

    @model_validator(mode="after")
    def _check_lr(self) -> TrainSpec:
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) exceeds train.lr ({self.lr})")
        return self


class DocumentUnit(StrEnum):
    """What one pretraining document is."""

    post = "post"  # a question (title + body) or an answer, each with its comments
    thread = "thread"  # a question with all its answers and their comments


class DataSpec(_Spec):
    """Where the corpus comes from and how it is cut into documents."""

    posts: Annotated[
        list[str],
        Field(min_length=1, description="Posts.xml files (.xml/.gz/.bz2/.7z, local or s3://)."),
    ]
    comments: Annotated[list[str], Field(description="Comments.xml files attached to their posts.")] = []
    document_unit: DocumentUnit = DocumentUnit.post
    min_document_chars: Annotated[int, Field(ge=0, description="Documents shorter than this are dropped.")] = 32
    workers: Annotated[
        int,
        Field(
            ge=1,
            description="Worker processes that parse and tokenize the dumps (the dataset is the same for any count).",
        ),
    ] = 2
    validation_fraction: Annotated[
        float,
        Field(
            ge=0,
            lt=0.5,
            description="Share of the posts held out for the validation loss, in shards of their own (chosen by a "
            "hash of each post's tokens); 0: none.",
        ),
    ] = 0.01
    tokenizer_train_docs: Annotated[
        int,
        Field(
            gt=0,
            description="Documents sampled (by a seeded hash of their ids, from pieces spread evenly over the "
            "dump) to train the BPE tokenizer.",
        ),
    ] = 200_000


class StorageSpec(_Spec):
    """The run's storage prefix: a local directory or s3://bucket/prefix."""

    uri: Annotated[str, Field(min_length=1, description="Local path or s3://bucket/prefix.")]
    endpoint_url: Annotated[str | None, Field(description="S3 endpoint for non-AWS servers (MinIO, SeaweedFS).")] = None
    credentials_secret: Annotated[
        str | None,
        Field(description="Kubernetes Secret holding AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."),
    ] = None

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        if value.startswith("s3://"):
            bucket = value[5:].split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        elif "://" in value:
            raise ValueError(f"expected a local path or s3://bucket/prefix, got {value!r}")
        return value.rstrip("/") or "/"


class PlacementSpec(_Spec):
    """Where the run's pods go on a cluster (ignored by the local backend)."""

    node_pool: Annotated[
        str | None, Field(description="Node pool (from the controller's cluster config); default pool if unset.")
    ] = None
    queue: Annotated[str | None, Field(description="Kueue LocalQueue or Volcano queue for gang scheduling.")] = None


class TaskName(StrEnum):
    """The four StackOverflow downstream tasks of the SOBert paper."""

    quality = "quality"  # question quality: HQ / LQ_EDIT / LQ_CLOSE (60k SO questions, Kaggle)
    closed = "closed"  # closed-question prediction: 5 OpenStatus classes (Kaggle 2012)
    ner = "ner"  # StackOverflowNER, 20 merged entity types (Tabassum et al. 2020)
    obsoletion = "obsoletion"  # is an answer obsolete? (weak labels from comments, or a labelled CSV)


class FinetuneTaskSpec(_Spec):
    """One downstream task: its data and its recipe (defaults: see docs/finetune.md)."""

    train: Annotated[
        str | None,
        Field(
            description="Training file (local or s3://). Obsoletion: a labelled CSV (post_id,text,label), or "
            "unset to weak-label the run's data.posts + data.comments."
        ),
    ] = None
    validation: Annotated[
        str | None, Field(description="Validation file; unset: a deterministic slice of train (validation_fraction).")
    ] = None
    validation_fraction: Annotated[float, Field(gt=0, lt=1, description="Share of train held out for validation.")] = (
        0.1
    )
    labels: Annotated[
        list[str] | None,
        Field(description="Override the task's label set (e.g. [HQ, LQ] for collapsed quality labels)."),
    ] = None
    encoding: Annotated[str, Field(description="Text encoding of the task files (e.g. cp1252).")] = "utf-8"
    max_length: Annotated[
        int | None, Field(gt=0, description="Tokens per example; unset: the model's max_position_embeddings.")
    ] = None
    epochs: Annotated[int, Field(gt=0, description="Passes over the training set.")] = 3
    learning_rate: Annotated[float, Field(gt=0, description="AdamW peak learning rate (linear decay).")] = 2e-5
    batch_size: Annotated[int, Field(gt=0, description="Examples per optimizer step, over all workers.")] = 16
    weight_decay: Annotated[float, Field(ge=0, description="AdamW weight decay.")] = 0.01
    warmup_fraction: Annotated[float, Field(ge=0, lt=1, description="Linear warmup share of the steps.")] = 0.1
    max_train_examples: Annotated[
        int | None, Field(gt=0, description="Cap on training examples (a deterministic sample); unset: all.")
    ] = None
    max_eval_examples: Annotated[int | None, Field(gt=0, description="Cap on validation examples.")] = None
    workers: Annotated[
        int | None, Field(ge=1, description="Ray Train workers for this task; unset: finetune.workers.")
    ] = None


class FinetuneSpec(_Spec):
    """The finetune stage: one Ray Train job per listed task, from the run's converted model."""

    workers: Annotated[int, Field(ge=1, description="Ray Train workers per task (RayJob worker replicas).")] = 2
    use_gpu: Annotated[bool, Field(description="One GPU per worker (KubeRay worker pods request nvidia.com/gpu).")] = (
        False
    )
    cpus_per_worker: Annotated[float, Field(gt=0, description="CPUs each Ray Train worker reserves.")] = 1
    seed: Annotated[int, Field(ge=0, description="Seed for head init, data order and splits.")] = 1234
    tasks: Annotated[
        dict[TaskName, FinetuneTaskSpec], Field(description="Tasks to finetune; an absent task is not run.")
    ] = {}


class BudgetSpec(_Spec):
    """The run's dollar budget and how it is enforced (see docs/cost.md)."""

    usd: Annotated[float | None, Field(gt=0, description="Budget in US dollars; unset: no limit.")] = None
    warn_fraction: Annotated[float, Field(gt=0, lt=1, description="Warn (event + condition) at this share.")] = 0.8
    checkpoint_fraction: Annotated[float, Field(gt=0, lt=1, description="Ask the trainer to checkpoint here.")] = 0.95
    allow_over_forecast: Annotated[
        bool, Field(description="Submitted although the forecast exceeded the budget (recorded in the report).")
    ] = False
    spot: Annotated[bool, Field(description="Price GPUs at the catalog's spot rate.")] = False

    @model_validator(mode="after")
    def _check_order(self) -> BudgetSpec:
        if self.checkpoint_fraction <= self.warn_fraction:
            raise ValueError(
                f"budget.checkpoint_fraction ({self.checkpoint_fraction}) must exceed "
                f"budget.warn_fraction ({self.warn_fraction})"
            )
        return self


class RunSpec(_Spec):
    """One sobert run: prepare -> pretrain -> convert (-> finetune -> report in later stages)."""

    name: Annotated[str, Field(description="DNS-1123 label; names the run's storage prefix.")]
    preset: Annotated[str | None, Field(description="Preset this spec was built from.")] = None
    backend: Literal["local", "kubernetes"] = "local"
    model: ModelSpec
    parallel: ParallelSpec = ParallelSpec()
    train: TrainSpec
    data: DataSpec
    storage: StorageSpec
    placement: PlacementSpec = PlacementSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    budget: BudgetSpec = BudgetSpec()

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _DNS_LABEL.fullmatch(value):
            raise ValueError(f"name: {value!r} must be a DNS-1123 label (lowercase letters, digits, '-', at most 63)")
        return value

    @model_validator(mode="after")
    def _check_cluster_inputs(self) -> RunSpec:
        if self.backend == "kubernetes":
            task_files = [f for t in self.finetune.tasks.values() for f in (t.train, t.validation) if f]
            inputs = [self.storage.uri, *self.data.posts, *self.data.comments, *task_files]
            local = [uri for uri in inputs if not uri.startswith("s3://")]
            if local:
                raise ValueError(
                    f"backend kubernetes: storage.uri, data.posts/comments and finetune task files must be s3:// URIs "
                    "that pods can read; "
                    f"got {', '.join(local)}"
                )
        return self

    @model_validator(mode="after")
    def _check_parallel_fit(self) -> RunSpec:
        tp, dp = self.parallel.tensor_parallel, self.parallel.data_parallel
        m, t = self.model, self.train
        if m.num_attention_heads % tp:
            raise ValueError(
                f"parallel.tensor_parallel ({tp}) must divide model.num_attention_heads ({m.num_attention_heads})"
            )
        if m.ffn_hidden_size % tp:
            raise ValueError(f"parallel.tensor_parallel ({tp}) must divide model.ffn_hidden_size ({m.ffn_hidden_size})")
        if t.global_batch_size % (t.micro_batch_size * dp):
            raise ValueError(
                f"train.global_batch_size ({t.global_batch_size}) must be divisible by "
                f"train.micro_batch_size x data-parallel size ({t.micro_batch_size} x {dp})"
            )
        return self

    @model_validator(mode="after")
    def _check_finetune_tasks(self) -> RunSpec:
        for name, task in self.finetune.tasks.items():
            if task.train is None and name is not TaskName.obsoletion:
                raise ValueError(f"finetune.tasks.{name.value}.train: a training file is required")
            if task.train is None and not self.data.comments:
                raise ValueError(
                    f"finetune.tasks.{name.value}.train: a labelled CSV is required when data.comments is empty "
                    "(without one, the weak labels are derived from the run's comments)"
                )
            if task.max_length is not None and task.max_length > self.model.max_position_embeddings:
                raise ValueError(
                    f"finetune.tasks.{name.value}.max_length ({task.max_length}) exceeds "
                    f"model.max_position_embeddings ({self.model.max_position_embeddings})"
                )
        return self

    @property
    def train_iters(self) -> int:
        return self.train.train_iters(self.model.seq_length)

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.train.global_batch_size // (self.train.micro_batch_size * self.parallel.data_parallel)
