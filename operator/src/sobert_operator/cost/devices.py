"""Which priced devices a run uses: its node pool's GPUs on a cluster, CPU cores on this machine."""

from __future__ import annotations

import math
from dataclasses import replace

from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig
from sobert_operator.cost.catalog import PriceCatalog
from sobert_operator.cost.forecast import (
    CONVERT_CORES,
    PREPARE_CORES,
    Device,
    Forecast,
    Measured,
    PhaseCores,
    calibrated_tokens_per_s,
    cpu_device,
    forecast_run,
    gpu_device,
    measured_pretrain_startup_s,
    measured_real_token_fraction,
)
from sobert_operator.cost.layer_impls import forecast_transformer_impl, mfu_factor
from sobert_operator.cost.money import usd


def local_stage_cores(spec: RunSpec, phase: str) -> float:
    """CPU cores a local stage process keeps busy (OMP_NUM_THREADS=1 per rank/worker): what the
    embedded backend charges each stage for, and so what its forecast prices."""
    if phase == "prepare":
        return float(spec.data.workers)
    if phase == "pretrain":
        return float(spec.parallel.world_size)
    if phase.startswith("finetune/"):
        task = spec.finetune.tasks.get(phase.split("/", 1)[1])  # type: ignore[call-overload]
        workers = (task.workers if task else None) or spec.finetune.workers
        return workers * spec.finetune.cpus_per_worker
    return 1.0


def phase_cores(spec: RunSpec) -> PhaseCores:
    """The cores each CPU phase is charged for: the local processes', or the pods' requests
    (render/jobs.py; a CPU Ray worker requests whole cores, render/finetune.py)."""
    if spec.backend == "local":
        return PhaseCores(local_stage_cores(spec, "prepare"), local_stage_cores(spec, "convert"),
                          spec.finetune.cpus_per_worker)  # fmt: skip
    return PhaseCores(PREPARE_CORES, CONVERT_CORES, float(math.ceil(spec.finetune.cpus_per_worker)))


def run_devices(
    spec: RunSpec,
    catalog: PriceCatalog,
    cluster: ClusterConfig | None = None,
    gpu: str | None = None,
    price: float | None = None,
    mfu: float | None = None,
) -> tuple[Device, Device]:
    """(training device, one CPU core: the price each CPU phase pays per core, on the cores
    `phase_cores` gives it). `gpu` overrides the pool; "cpu" (or the local backend) trains on cores."""
    world = spec.parallel.world_size
    if gpu is None and cluster is not None and spec.backend == "kubernetes":
        pool = cluster.pool(spec.placement.node_pool)[1]
        gpu = pool.gpu_type
        spot = spec.budget.spot or pool.spot
    else:
        spot = spec.budget.spot
    if gpu is None or gpu == "cpu":
        cores = cpu_device(catalog, world, mfu)
        if price is not None:
            cores = replace(cores, usd_per_hour=price, price_source="given (--price)")
        return cores, cpu_device(catalog, 1)
    impl = forecast_transformer_impl(spec)
    layers = (impl.value, mfu_factor(spec.model, spec.train.mask_prob, impl))
    return gpu_device(catalog, gpu, world, spot=spot, price=price, mfu=mfu, layers=layers), cpu_device(catalog, 1)


def forecast_for(
    spec: RunSpec,
    catalog: PriceCatalog,
    cluster: ClusterConfig | None = None,
    progress: list[dict] | None = None,
    measured: Measured | None = None,
    **device,
) -> Forecast:
    """The run's forecast; with progress records past the calibration window, from measured
    tokens/s and start-up; with `measured` (`cost/measured.py`), from what else the run measured."""
    train, cpu = run_devices(spec, catalog, cluster, **device)
    records = progress or []
    measured = replace(measured or Measured(), pretrain_startup_s=measured_pretrain_startup_s(records))
    return forecast_run(spec, train, cpu, phase_cores(spec), calibrated_tokens_per_s(records),
                        measured_real_token_fraction(records), measured)  # fmt: skip


def budget_problem(spec: RunSpec, forecast: Forecast) -> str | None:
    """Why a submit is refused (the forecast exceeds the budget), or None."""
    budget = spec.budget.usd
    if budget is None or forecast.usd <= budget or spec.budget.allow_over_forecast:
        return None
    return (
        f"forecast {usd(forecast.usd)} (band {usd(forecast.usd_low)}-{usd(forecast.usd_high)}) exceeds the budget "
        f"{usd(budget)}; raise --budget, shrink the run, or pass --over-budget to submit anyway"
    )


def peak_tflops(spec: RunSpec, catalog: PriceCatalog, cluster: ClusterConfig | None = None) -> float | None:
    """Dense BF16 peak (TFLOP/s) of one of the run's training GPUs, which the trainer's MFU is
    against; None when it trains on CPU cores."""
    device = run_devices(spec, catalog, cluster)[0]
    return None if device.kind == "cpu" else device.flops_per_s / 1e12
