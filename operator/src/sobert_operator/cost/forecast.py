"""Forecast a run's cost before launch, per phase, with a low/high band and its assumptions, and
again as the run measures what the forecast assumed (`Measured`).

Pretraining and finetuning: FLOPs (flops.py) / (devices x peak x MFU) = seconds; x devices x
$/device-hour = dollars. The band spans MFU x 0.75 (high cost) to x 1.25 (low cost) before
calibration, +-10% once a measured tokens/s replaces the MFU guess. Data preparation and
conversion are CPU pods priced per core-hour from measured rates (BENCHMARKS.md).

Each phase also pays its process's fixed costs: start-up (imports, a Ray cluster, loading a model)
and teardown, measured on the 2-core CPU host BENCHMARKS.md reports ("Forecast vs spend"); they
dominate a smoke run and vanish in a real one. Once measured:
- prepare is priced on the published dataset's tokens (before, on the posts files' bytes x the
  tokens per byte measured on real rows);
- pretraining on its calibrated tokens/s and its processes' measured start-up;
- each finetune on its first epoch's seconds (training and evaluation) x its epochs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sobert_api.flops import flops_per_token, forward_flops_per_token, pretraining_flops_per_token
from sobert_api.spec import FinetuneTaskSpec, RunSpec, TaskName
from sobert_operator.cost.catalog import PriceCatalog

# Sample slots that hold real tokens once posts are packed (sobert_trainer/data/shards.py) and
# samples are filled to the sequence length (pretrain/dataset.py FullLengthSamples): only the last
# sample of each ~1M-token Megatron document (1 in ~512 at sequence 2,048) is short, so >= 99.9% on a
# full dump (99.8% on the small real sample, whose documents are smaller). The trainer's measure
# replaces it.
PACKED_REAL_TOKEN_FRACTION = 0.999
# Measured end to end per worker core (process start to published manifest, 2 workers on a 50 MB
# Posts.xml of real rows, vocab 50,000: BENCHMARKS.md "Data preparation"); parsing, tokenizing and
# packing scale with the workers, the bounded tokenizer training does not.
PREPARE_TOKENS_PER_CORE_S = 210_000
PREPARE_TOKENS_PER_POSTS_BYTE = 0.111  # 5,571,886 tokens from the 50 MB Posts.xml of real rows
PREPARE_CORES = 4  # the prepare Job's CPU request (render/jobs.py)
CONVERT_CORES = 2
CONVERT_BYTES_PER_S = 200e6  # reading a checkpoint and writing safetensors
# Fixed costs of each stage's process (seconds): means over three `make run`s on the 2-core CPU host
# (BENCHMARKS.md "Forecast vs spend"), whose speed itself varied by ~25% between them.
PREPARE_STARTUP_S = 0.8  # the worker pool, the comments table, BPE training's floor
PRETRAIN_STARTUP_S = 8.0  # torchrun, imports, process groups, the dataset index, the model (measured after)
PRETRAIN_TEARDOWN_S = 4.0  # the last checkpoint's upload, process-group teardown, torchrun's exit
CONVERT_STARTUP_S = 7.6  # importing torch, megatron-core and transformers; loading the checkpoint
FINETUNE_STARTUP_S = 7.0  # Ray, the task's data and tokenizer, before Ray Train starts
FINETUNE_FIT_OVERHEAD_S = 22.0  # Ray Train's worker group, the model in each worker, epoch checkpoints
FINETUNE_TEARDOWN_S = 3.1  # publishing the best checkpoint and metrics, Ray's shutdown
MFU_BAND = (0.75, 1.25)
CALIBRATED_BAND = (0.9, 1.1)
# Training-set sizes of the tasks' public datasets, used when a spec does not cap them.
TASK_EXAMPLES = {TaskName.quality: 45_000, TaskName.closed: 140_272, TaskName.ner: 9_263, TaskName.obsoletion: 10_000}
MEAN_EXAMPLE_TOKENS = 400  # StackOverflow posts: the mean is far below a 2,048 cap (padded per batch)


@dataclass(frozen=True)
class Device:
    """What a phase runs on: `count` GPUs of a type, or CPU cores."""

    kind: str  # a GPU type, or "cpu"
    count: float  # GPUs, or CPU cores (a Ray worker may hold a fraction)
    usd_per_hour: float  # per device
    flops_per_s: float  # peak per device
    mfu: float
    price_source: str
    price_date: str
    mfu_source: str


@dataclass(frozen=True)
class PhaseCores:
    """The CPU cores each CPU phase is charged for: the executor's allocation (a pod's request,
    or the local process's cores, `local_stage_cores`)."""

    prepare: float
    convert: float
    finetune_per_worker: float  # when finetuning on CPU


@dataclass(frozen=True)
class Measured:
    """What a run has measured so far; each replaces an assumption of the forecast."""

    posts_bytes: int | None = None  # the posts files' size (local files), before the dataset exists
    dataset_tokens: int | None = None  # the published dataset's tokens
    pretrain_startup_s: float | None = None  # the first training process's start-up (progress.jsonl)
    finetune_epochs: dict[str, tuple[int, float]] = field(default_factory=dict)  # task -> (examples, 1st epoch s)


@dataclass
class PhaseForecast:
    phase: str
    device: str
    devices: float
    seconds: float
    usd: float
    usd_low: float
    usd_high: float
    tokens: int = 0
    flops: float = 0.0
    note: str = ""


@dataclass
class Forecast:
    phases: list[PhaseForecast] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def usd(self) -> float:
        return sum(p.usd for p in self.phases)

    @property
    def usd_low(self) -> float:
        return sum(p.usd_low for p in self.phases)

    @property
    def usd_high(self) -> float:
        return sum(p.usd_high for p in self.phases)

    @property
    def gpu_hours(self) -> float:
        return sum(p.seconds * p.devices for p in self.phases if p.device != "cpu") / 3600

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 4),
            "usd_low": round(self.usd_low, 4),
            "usd_high": round(self.usd_high, 4),
            "gpu_hours": round(self.gpu_hours, 3),
            "seconds": round(self.seconds, 1),
            "phases": [asdict(p) for p in self.phases],
            "assumptions": self.assumptions,
        }


def gpu_device(catalog: PriceCatalog, gpu: str, count: int, *, spot: bool = False, price: float | None = None,
               mfu: float | None = None, layers: tuple[str, float] = ("te", 1.0)) -> Device:  # fmt: skip
    """`count` GPUs of a catalog model. `layers`: the layer implementation the run is forecast to
    run and its factor on the catalog's expected MFU, which is TE's (`cost/layer_impls.py`)."""
    model = catalog.gpu(gpu)
    if price is None:
        listed = catalog.price(gpu, "spot" if spot else "on_demand")
        price, source, date = listed.usd_per_gpu_hour, f"{listed.provider}: {listed.source}", listed.date
    else:
        source, date = "given on the command line (--price)", "-"
    impl, factor = layers
    expected = f"catalog default for {gpu} ({model.source})"
    if factor != 1.0:
        expected += f" x {factor:.2f} for {impl} layers (docs/cost.md)"
    return Device(
        kind=gpu.lower(),
        count=count,
        usd_per_hour=price,
        flops_per_s=model.peak_tflops * 1e12,
        mfu=mfu if mfu is not None else model.expected_mfu * factor,
        price_source=source,
        price_date=date,
        mfu_source="given (--mfu)" if mfu is not None else expected,
    )


def cpu_device(catalog: PriceCatalog, cores: int, mfu: float | None = None) -> Device:
    cpu = catalog.cpu
    return Device(
        kind="cpu",
        count=cores,
        usd_per_hour=cpu.usd_per_core_hour,
        flops_per_s=cpu.peak_gflops_per_core * 1e9,
        mfu=mfu if mfu is not None else cpu.expected_mfu,
        price_source=cpu.source,
        price_date=cpu.date,
        mfu_source="given (--mfu)" if mfu is not None else "catalog default for CPU cores",
    )


def _priced(phase: str, device: Device, seconds: float, band: tuple[float, float], **extra) -> PhaseForecast:
    usd = seconds * device.count * device.usd_per_hour / 3600
    return PhaseForecast(
        phase=phase,
        device=device.kind,
        devices=device.count,
        seconds=seconds,
        usd=usd,
        usd_low=usd / band[1],
        usd_high=usd / band[0],
        **extra,
    )


def pretrain_tokens(spec: RunSpec) -> int:
    return spec.train_iters * spec.train.global_batch_size * spec.model.seq_length


def forecast_run(
    spec: RunSpec,
    train_device: Device,
    cpu: Device,
    cores: PhaseCores,
    calibrated_tokens_per_s: float | None = None,
    real_token_fraction: float = PACKED_REAL_TOKEN_FRACTION,
    measured: Measured | None = None,
) -> Forecast:
    """Every phase of `spec` priced on `train_device` (pretraining, GPU finetunes) and `cpu` (its
    per-core price; `cores` says how many each CPU phase holds). Pretraining counts real tokens:
    the sample slots x `real_token_fraction`, at the model FLOPs per real token, or at the measured
    real tokens/s (`calibrated_tokens_per_s`)."""
    measured = measured or Measured()
    result = Forecast()
    result.phases.append(_prepare_phase(spec, replace(cpu, count=cores.prepare), measured))
    result.phases.append(_pretrain_phase(spec, train_device, calibrated_tokens_per_s, real_token_fraction, measured))
    checkpoint_bytes = spec.model.parameter_count() * 18
    convert_s = CONVERT_STARTUP_S + checkpoint_bytes / CONVERT_BYTES_PER_S
    result.phases.append(_priced("convert", replace(cpu, count=cores.convert), convert_s, (1.0, 1.0),
                                 note=f"{checkpoint_bytes:,} checkpoint bytes"))  # fmt: skip
    for name, task in spec.finetune.tasks.items():
        result.phases.append(_finetune_phase(spec, name, task, train_device, cpu, cores, measured))
    result.assumptions = {
        "train_device": asdict(train_device),
        "cpu": asdict(cpu),
        "phase_cores": asdict(cores),
        "flops_per_token": pretraining_flops_per_token(spec.model, spec.train.mask_prob),
        "prepare_tokens_per_core_s": PREPARE_TOKENS_PER_CORE_S,
        "mfu_band": list(CALIBRATED_BAND if calibrated_tokens_per_s else MFU_BAND),
        "calibrated_tokens_per_s": calibrated_tokens_per_s,
        "real_token_fraction": real_token_fraction,
        "mean_finetune_example_tokens": MEAN_EXAMPLE_TOKENS,
        "measured": asdict(measured),
    }
    return result


def _prepare_phase(spec: RunSpec, cpu: Device, measured: Measured) -> PhaseForecast:
    """Parsing and tokenizing the corpus: the dataset's tokens when published, else estimated from
    the posts' bytes, else one pass of the token budget."""
    tokens, note = pretrain_tokens(spec), "corpus assumed the size of one pass of the token budget"
    if measured.dataset_tokens is not None:
        tokens, note = measured.dataset_tokens, "the published dataset's tokens"
    elif measured.posts_bytes is not None:
        tokens = round(measured.posts_bytes * PREPARE_TOKENS_PER_POSTS_BYTE)
        note = f"{measured.posts_bytes:,} bytes of posts x {PREPARE_TOKENS_PER_POSTS_BYTE} tokens per byte"
    seconds = PREPARE_STARTUP_S + tokens / (PREPARE_TOKENS_PER_CORE_S * spec.data.workers)
    return _priced("prepare", cpu, seconds, (1.0, 1.0), tokens=tokens, note=note)


def _pretrain_phase(
    spec: RunSpec, device: Device, calibrated_tokens_per_s: float | None, real_token_fraction: float, measured: Measured
) -> PhaseForecast:
    """The real tokens of the token budget at the measured rate, else at the device's expected MFU;
    plus start-up (measured once the run has started) and teardown."""
    tokens = round(pretrain_tokens(spec) * real_token_fraction)
    flops = pretraining_flops_per_token(spec.model, spec.train.mask_prob) * tokens
    if calibrated_tokens_per_s:
        seconds, band, note = tokens / calibrated_tokens_per_s, CALIBRATED_BAND, "calibrated from progress.jsonl"
    else:
        rate = device.count * device.flops_per_s * device.mfu
        seconds, band, note = flops / rate, MFU_BAND, f"MFU {device.mfu:.2f}"
    startup = PRETRAIN_STARTUP_S if measured.pretrain_startup_s is None else measured.pretrain_startup_s
    seconds += startup + PRETRAIN_TEARDOWN_S
    return _priced("pretrain", device, seconds, band, tokens=tokens, flops=flops, note=note)


def _finetune_phase(
    spec: RunSpec,
    name: TaskName,
    task: FinetuneTaskSpec,
    train_device: Device,
    cpu: Device,
    cores: PhaseCores,
    measured: Measured,
) -> PhaseForecast:
    """One task's Ray Train job: its epochs at the first epoch's measured rate once it has run,
    else its training and evaluation FLOPs at the device's expected MFU; plus fixed overheads."""
    workers = task.workers or spec.finetune.workers
    device = replace(train_device, count=workers) if spec.finetune.use_gpu else replace(
        cpu, count=workers * cores.finetune_per_worker)  # fmt: skip
    overhead = FINETUNE_STARTUP_S + FINETUNE_FIT_OVERHEAD_S + FINETUNE_TEARDOWN_S
    if name.value in measured.finetune_epochs:
        examples, first_epoch_s = measured.finetune_epochs[name.value]
        seconds = overhead + task.epochs * first_epoch_s
        return _priced(f"finetune/{name.value}", device, seconds, CALIBRATED_BAND,
                       note=f"{examples} examples x {task.epochs} epochs at the first epoch's "
                       f"{examples / first_epoch_s:.1f} examples/s")  # fmt: skip
    examples = task.max_train_examples or TASK_EXAMPLES[name]
    length = min(task.max_length or spec.model.max_position_embeddings, MEAN_EXAMPLE_TOKENS)
    train_tokens = examples * task.epochs * length
    eval_tokens = round(examples * task.validation_fraction) * task.epochs * length
    task_flops = flops_per_token(spec.model, length) * train_tokens
    task_flops += forward_flops_per_token(spec.model, length) * eval_tokens
    flops_device = replace(device, count=workers)  # FLOPs run on the workers, whatever they are charged for
    seconds = overhead + task_flops / (flops_device.count * flops_device.flops_per_s * flops_device.mfu)
    return _priced(f"finetune/{name.value}", device, seconds, MFU_BAND, tokens=train_tokens,
                   flops=task_flops, note=f"{examples} examples x {task.epochs} epochs")  # fmt: skip


def _rate_key(records: list[dict[str, Any]]) -> str:
    """Real tokens/s where the trainer reports them (records before it did count padding too)."""
    return "real_tokens_per_s" if any(r.get("real_tokens_per_s") for r in records) else "tokens_per_s"


def calibrated_tokens_per_s(records: list[dict[str, Any]], window_steps: int = 10) -> float | None:
    """Measured pretraining throughput after a calibration window: real tokens/s over the steps
    after the first `window_steps` (which include compilation, allocator and data-loader warm-up),
    or None while fewer than `window_steps` + 2 records exist."""
    key = _rate_key(records)
    steady = [r for r in records if r.get("step", 0) > window_steps and r.get(key)]
    if len(steady) < 2:
        return None
    ordered = sorted(r[key] for r in steady)
    return float(ordered[len(ordered) // 2])  # the median resists a stray slow step (a checkpoint save)


def measured_real_token_fraction(records: list[dict[str, Any]]) -> float:
    """The real-token fraction the trainer measured (median), else what packing gives; 1 when the
    forecast is calibrated from records that predate the measure (their tokens/s counted padding
    too, so the calibrated forecast counts sample slots)."""
    fractions = sorted(r["real_token_fraction"] for r in records if r.get("real_token_fraction"))
    if fractions:
        return float(fractions[len(fractions) // 2])
    return 1.0 if calibrated_tokens_per_s(records) is not None else PACKED_REAL_TOKEN_FRACTION


def measured_pretrain_startup_s(records: list[dict[str, Any]]) -> float | None:
    """The first training process's start-up (process start to its first step), if recorded."""
    return next((float(r["startup_s"]) for r in records if r.get("startup_s") is not None), None)
