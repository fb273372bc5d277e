"""The cost model: FLOPs against closed forms, forecasts, the ledger on recorded pod histories, the policy."""

import itertools

import pytest

from sobert_api import build_spec
from sobert_api.flops import flops_per_token, lm_head_matmul_parameters, pretraining_flops_per_token
from sobert_api.loading import SpecError
from sobert_api.spec import BudgetSpec, TransformerImpl
from sobert_operator.cost.catalog import load_catalog
from sobert_operator.cost.devices import budget_problem, forecast_for
from sobert_operator.cost.forecast import (
    PACKED_REAL_TOKEN_FRACTION,
    PRETRAIN_STARTUP_S,
    PRETRAIN_TEARDOWN_S,
    calibrated_tokens_per_s,
)
from sobert_operator.cost.ledger import Allocation, allocation_from_pod, spend_series, summarize
from sobert_operator.cost.policy import BudgetAction, budget_action, seconds_left, threshold_seconds


def spec(preset="base", **extra):
    doc = {"preset": preset, "name": "c", "data": {"posts": ["p"]}, "storage": {"uri": "/s"}}
    return build_spec({**doc, "parallel": {"procs_per_node": 8 if preset != "tiny" else 2}, **extra})


def test_flops_per_token_closed_form():
    m = spec().model  # base: L=12, h=768, s=2048
    n = m.parameter_count()
    assert flops_per_token(m) == 6 * n + 12 * 12 * 768 * 2048
    assert flops_per_token(m, seq_length=512) == 6 * n + 12 * 12 * 768 * 512
    # Pretraining: the head's matmuls (768 x 768 dense, 768 x 50,048 tied output) at masked tokens only.
    head = 768 * 768 + 50_048 * 768
    assert lm_head_matmul_parameters(m) == head
    assert pretraining_flops_per_token(m, 0.15) == 6 * (n - head) + 6 * head * 0.15 + 12 * 12 * 768 * 2048


def test_paper_budgets_are_reproduced_in_order_of_magnitude():
    catalog = load_catalog()
    base = forecast_for(spec("base"), catalog, gpu="a100-80gb")
    large = forecast_for(spec("large"), catalog, gpu="a100-80gb")
    # The SOBert paper: $187 (base) and $800 (large). Same order; large costs ~5-6x base.
    assert 60 < base.usd < 300 and 300 < large.usd < 1300
    assert 4 < large.usd / base.usd < 7
    assert base.usd_low < base.usd < base.usd_high
    pretrain = next(p for p in base.phases if p.phase == "pretrain")
    # The paper's 27B tokens in sample slots, of which packing leaves the real ones.
    assert pretrain.tokens == round(27_000_307_712 * PACKED_REAL_TOKEN_FRACTION) and pretrain.devices == 8
    assert [p.phase for p in base.phases] == ["prepare", "pretrain", "convert"]


def test_price_and_mfu_overrides_scale_the_forecast():
    catalog = load_catalog()
    at = {mfu: forecast_for(spec(), catalog, gpu="h100", price=2.0, mfu=mfu) for mfu in (0.3, 0.6)}
    pre = {k: next(p for p in f.phases if p.phase == "pretrain") for k, f in at.items()}
    fixed = PRETRAIN_STARTUP_S + PRETRAIN_TEARDOWN_S  # the process's start-up and teardown do not scale
    assert pre[0.3].seconds - fixed == pytest.approx(2 * (pre[0.6].seconds - fixed))
    assert at[0.3].assumptions["train_device"]["price_source"] == "given on the command line (--price)"
    with pytest.raises(SpecError, match="unknown GPU 'tpu'"):
        forecast_for(spec(), catalog, gpu="tpu")


def test_the_expected_mfu_follows_the_layer_implementation_and_its_attention_path():
    from sobert_operator.cost.layer_impls import AttentionPath, attention_flops_share, mfu_factor

    catalog = load_catalog()
    h100 = catalog.gpu("h100").expected_mfu

    def pretrain_mfu(**model):
        forecast = forecast_for(spec(model=model), catalog, gpu="h100")
        return forecast.assumptions["train_device"]["mfu"], forecast.assumptions["train_device"]["mfu_source"]

    # The trainer image has TE: the catalog's figure is TE's, unscaled, when the spec names none.
    assert pretrain_mfu() == (h100, "catalog default for h100 (NVIDIA H100 SXM5 datasheet (989 TFLOPS BF16 dense))")
    assert pretrain_mfu(transformer_impl="te")[0] == h100
    local, source = pretrain_mfu(transformer_impl="local")
    assert source.endswith("x 0.84 for local layers (docs/cost.md)")
    # Attention is 29% of base's FLOPs at seq 2,048 and 18% of large's: SDPA's slower kernels cost base more.
    base, large = spec("base").model, spec("large").model
    assert attention_flops_share(base, 0.15) == pytest.approx(0.290, abs=1e-3)
    assert attention_flops_share(large, 0.15) == pytest.approx(0.178, abs=1e-3)
    flash = {m: mfu_factor(m, 0.15, TransformerImpl.local, AttentionPath.sdpa_flash) for m in (base, large)}
    masked = {m: mfu_factor(m, 0.15, TransformerImpl.local, AttentionPath.sdpa_masked) for m in (base, large)}
    assert local == pytest.approx(h100 * flash[base])
    assert masked[base] < flash[base] < flash[large] < 1.0
    # The audit's estimate for base with a mask on every micro-batch: about 0.24 MFU on an H100.
    assert h100 * masked[base] == pytest.approx(0.25, abs=0.01)
    assert mfu_factor(base, 0.15, TransformerImpl.te) == 1.0


def test_budget_refusal_and_override():
    catalog = load_catalog()
    small = spec(budget={"usd": 10})
    assert "exceeds the budget $10.00" in budget_problem(small, forecast_for(small, catalog, gpu="h100"))
    forced = spec(budget={"usd": 10, "allow_over_forecast": True})
    assert budget_problem(forced, forecast_for(forced, catalog, gpu="h100")) is None
    with pytest.raises(SpecError, match="checkpoint_fraction"):
        spec(budget={"usd": 10, "warn_fraction": 0.9, "checkpoint_fraction": 0.5})


def test_calibration_uses_the_median_after_the_window():
    records = [{"step": s, "tokens_per_s": 100.0 if s <= 10 else 1000.0 + s} for s in range(1, 16)]
    records[12]["tokens_per_s"] = 5.0  # a checkpoint-save step
    assert calibrated_tokens_per_s(records, window_steps=10) == 1012.0  # median of 5, 1011, 1012, 1014, 1015
    assert calibrated_tokens_per_s(records[:11], window_steps=10) is None


# Recorded pod histories (times in seconds): 8-GPU pods at $3/GPU-hour.
def alloc(name, start, end, reason="Completed", phase="pretrain", devices=8):
    return Allocation(name, phase, "h100", devices, 3.0, start, end, reason)


def test_ledger_restart_after_preemption_counts_both_pods():
    first = alloc("master-0", 0, 3600, "Preempted")
    second = alloc("master-0-retry", 3700, 7300)
    summary = summarize([first, second], now=8000)
    assert summary["usd"] == pytest.approx(8 * 3.0 * 2)  # two pod-hours of 8 GPUs
    assert summary["device_hours"] == pytest.approx(16)


def test_ledger_overlapping_and_running_pods_by_phase():
    pods = [alloc("m", 0, None), alloc("w", 600, None), alloc("prep", 0, 1800, phase="prepare", devices=4)]
    summary = summarize(pods, now=3600)
    assert summary["by_phase"]["pretrain"] == pytest.approx(8 * 3 * 1 + 8 * 3 * (3000 / 3600))
    assert summary["by_phase"]["prepare"] == pytest.approx(4 * 3 * 0.5)
    series = spend_series(pods, now=3600, points=5)
    assert series[0] == (0, 0) and series[-1][1] == pytest.approx(summary["usd"])
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(series))


def test_allocation_from_a_pod_object():
    pod = {
        "metadata": {"name": "r-pretrain-master-0"},
        "spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "8", "cpu": "96"}}}]},
        "status": {
            "startTime": "2026-01-01T00:00:00Z",
            "reason": "Evicted",
            "containerStatuses": [{"state": {"terminated": {"finishedAt": "2026-01-01T00:30:00Z", "reason": "Error"}}}],
        },
    }
    a = allocation_from_pod(pod, "h100", 3.0, "pretrain")
    assert (a.devices, a.seconds(0), a.reason) == (8, 1800, "Evicted")
    assert allocation_from_pod({"metadata": {"name": "p"}, "status": {}}, "h100", 3.0, "pretrain") is None
    running = {**pod, "status": {"startTime": "2026-01-01T00:00:00Z"}}
    assert allocation_from_pod(running, "h100", 3.0, "pretrain").end is None
    cpu = {**pod, "spec": {"containers": [{"resources": {"requests": {"cpu": "500m"}}}]}}
    assert allocation_from_pod(cpu, "cpu", 0.04, "prepare").devices == 0.5


@pytest.mark.parametrize(
    ("spend", "action"),
    [(0, BudgetAction.ok), (79.9, BudgetAction.ok), (80, BudgetAction.warn), (95, BudgetAction.checkpoint),
     (99.99, BudgetAction.checkpoint), (100, BudgetAction.stop), (150, BudgetAction.stop)],
)  # fmt: skip
def test_policy_transitions(spend, action):
    assert budget_action(spend, BudgetSpec(usd=100)) is action


def test_policy_without_budget_and_after_a_raise():
    assert budget_action(10_000, BudgetSpec()) is BudgetAction.ok
    assert budget_action(100, BudgetSpec(usd=200)) is BudgetAction.ok  # raised: the stop is lifted
    assert seconds_left(50, BudgetSpec(usd=100), burn_usd_per_hour=25) == 7200
    assert seconds_left(50, BudgetSpec(), burn_usd_per_hour=25) is None
    times = threshold_seconds(0, BudgetSpec(usd=100), burn_usd_per_hour=100)
    assert times == {BudgetAction.warn: 2880, BudgetAction.checkpoint: 3420, BudgetAction.stop: 3600}


def test_the_builtin_catalog_and_the_chart_ci_catalog_validate():
    from pathlib import Path

    import yaml

    from sobert_operator.cost.catalog import PriceCatalog

    catalog = load_catalog()
    assert all(p.source and p.date for p in catalog.prices)
    assert {"on_demand", "spot"} <= {p.kind for p in catalog.prices}
    assert catalog.price("h100").usd_per_gpu_hour == min(
        p.usd_per_gpu_hour for p in catalog.prices if p.gpu == "h100" and p.kind == "on_demand"
    )
    ci = yaml.safe_load((Path(__file__).resolve().parents[2] / "charts/sobert/ci/ci-values.yaml").read_text())
    assert PriceCatalog.model_validate(ci["priceCatalog"]).price("a100-80gb", "spot").usd_per_gpu_hour == 0.9


def test_a_bad_catalog_names_the_file_and_field(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("gpus: {}\nprices: [{gpu: h100, usdPerGpuHour: -1, provider: x, source: y, date: z}]\ncpu: {}\n")
    with pytest.raises(SpecError, match=r"prices\.yaml: invalid price catalog") as error:
        load_catalog(path)
    assert "prices.0.usdPerGpuHour" in str(error.value) and "cpu.usdPerCoreHour" in str(error.value)


def test_forecast_refreshes_from_measured_throughput_after_the_window():
    catalog = load_catalog()
    records = [{"step": s, "tokens_per_s": 2_000_000.0} for s in range(1, 30)]
    before = forecast_for(spec(), catalog, gpu="h100")
    after = forecast_for(spec(), catalog, gpu="h100", progress=records)
    pretrain = next(p for p in after.phases if p.phase == "pretrain")
    assert pretrain.seconds == pytest.approx(27_000_307_712 / 2_000_000 + PRETRAIN_STARTUP_S + PRETRAIN_TEARDOWN_S)
    assert pretrain.note == "calibrated from progress.jsonl" and after.assumptions["calibrated_tokens_per_s"] == 2e6
    assert pretrain.usd_high / pretrain.usd == pytest.approx(1 / 0.9)  # the band narrows to +-10%
    assert forecast_for(spec(), catalog, gpu="h100", progress=records[:5]).usd == before.usd  # still warming up


def test_forecast_and_calibration_count_real_tokens():
    """Calibration reads real tokens/s where the trainer reports them; the pretraining forecast
    counts the real tokens (slots x measured fraction), so a calibrated forecast does not charge
    for padding twice."""
    from sobert_operator.cost.forecast import measured_real_token_fraction

    records = [
        {"step": s, "tokens_per_s": 2000.0, "real_tokens_per_s": 1000.0, "real_token_fraction": 0.5}
        for s in range(1, 16)
    ]
    assert calibrated_tokens_per_s(records, window_steps=10) == 1000.0
    assert measured_real_token_fraction(records) == 0.5
    assert measured_real_token_fraction([]) == PACKED_REAL_TOKEN_FRACTION  # before any record
    legacy = [{"step": s, "tokens_per_s": 5.0} for s in range(1, 16)]  # records that predate the measure
    assert measured_real_token_fraction(legacy) == 1.0
    assert measured_real_token_fraction(legacy[:5]) == PACKED_REAL_TOKEN_FRACTION  # not calibrated yet
    catalog = load_catalog()
    run = spec()
    pretrain = next(p for p in forecast_for(run, catalog, gpu="h100", progress=records).phases if p.phase == "pretrain")
    slots = run.train_iters * run.train.global_batch_size * run.model.seq_length
    assert pretrain.tokens == round(slots * 0.5)
    assert pretrain.seconds == pytest.approx(slots * 0.5 / 1000.0 + PRETRAIN_STARTUP_S + PRETRAIN_TEARDOWN_S)


def test_spend_goes_on_accruing_while_the_ledger_cannot_be_read():
    """A storage outage must not freeze the spend (and with it the budget): the controller adds
    what the running pods cost since they were last priced, each once."""
    from sobert_operator.cost.ledger import Allocation
    from sobert_operator.kube.budget import accrued_since_priced, open_pods

    gpu = Allocation("run-pretrain-master-0", "pretrain", "h100", 8, 3.6, start=1000.0)
    new = Allocation("run-pretrain-worker-0", "pretrain", "h100", 8, 3.6, start=1090.0)
    ended = Allocation("run-prepare-x", "prepare", "cpu", 4, 0.05, start=900.0, end=1050.0)
    priced = open_pods([gpu], now=1060.0)  # the last pass that read the ledger
    # 40 s of the known pod since it was priced, 10 s of the new one since its start; ended pods
    # wait for the ledger.
    assert accrued_since_priced([gpu, new, ended], priced, now=1100.0) == pytest.approx(8 * 3.6 * 50 / 3600)
    # The next pass without storage counts from this one, not again from the last priced pass.
    assert accrued_since_priced([gpu, new], open_pods([gpu, new], now=1100.0), now=1110.0) == pytest.approx(
        8 * 3.6 * 20 / 3600
    )


def test_the_forecast_takes_what_the_run_measured():
    from sobert_api import build_spec
    from sobert_operator.cost.devices import local_stage_cores
    from sobert_operator.cost.forecast import (
        FINETUNE_FIT_OVERHEAD_S,
        FINETUNE_STARTUP_S,
        FINETUNE_TEARDOWN_S,
        PREPARE_STARTUP_S,
        PREPARE_TOKENS_PER_CORE_S,
        PREPARE_TOKENS_PER_POSTS_BYTE,
        Measured,
    )

    run = build_spec({"preset": "tiny", "name": "m", "data": {"posts": ["p"], "workers": 3}, "storage": {"uri": "/s"},
                      "finetune": {"tasks": {"quality": {"train": "q.jsonl", "epochs": 3}}}})  # fmt: skip
    catalog = load_catalog()
    records = [{"step": s, "tokens_per_s": 1000.0, "startup_s": 12.5} for s in range(1, 16)]

    def phases(measured):
        return {p.phase: p for p in forecast_for(run, catalog, progress=records, measured=measured).phases}

    before = phases(Measured(posts_bytes=9_000_000))
    assert before["prepare"].tokens == round(9_000_000 * PREPARE_TOKENS_PER_POSTS_BYTE)
    after = phases(Measured(posts_bytes=9_000_000, dataset_tokens=2_100_000, finetune_epochs={"quality": (480, 4.0)}))
    assert after["prepare"].seconds == pytest.approx(PREPARE_STARTUP_S + 2_100_000 / (PREPARE_TOKENS_PER_CORE_S * 3))
    overhead = FINETUNE_STARTUP_S + FINETUNE_FIT_OVERHEAD_S + FINETUNE_TEARDOWN_S
    assert after["finetune/quality"].seconds == pytest.approx(overhead + 3 * 4.0)  # epochs x the first epoch
    slots = run.train_iters * run.train.global_batch_size * run.model.seq_length
    assert after["pretrain"].seconds == pytest.approx(slots / 1000.0 + 12.5 + PRETRAIN_TEARDOWN_S)  # its start-up
    # Each phase is priced on the cores the embedded backend charges it for.
    for phase, forecast in after.items():
        assert forecast.devices == local_stage_cores(run, phase), phase
