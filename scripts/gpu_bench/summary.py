"""`make bench-gpu`'s figures: progress records to one summary per preset, and the results of every
stage to the two BENCHMARKS.md sections it writes (`bench_file.section`). Pure functions, so the
tables are tested on CPU (tests/unit/test_bench_gpu.py) with records of the trainer's format."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections import Counter
from typing import Any

from bench_file import section  # scripts/ is on sys.path (bench_gpu.py's folder; the tests' testbed_plugin)

PRETRAIN_SECTION = "gpu-pretrain"
KERNELS_SECTION = "gpu-kernels"
WARMUP_STEPS = 3  # torch.compile, cuDNN autotuning and the allocator's warm-up fall in the first steps
# What the nvidia-smi sampler beside each run records (`--format=csv,noheader,nounits`, every 0.5 s).
NVSMI_FIELDS = ("timestamp", "memory.used", "utilization.gpu", "power.draw")
# Medians of these progress-record fields over the steps after the warm-up.
MEDIAN_FIELDS = (
    "step_time_s",
    "tokens_per_s",
    "real_tokens_per_s",
    "real_token_fraction",
    "model_tflops_per_s_per_device",
    "mfu",
)
# The trainer's time accounts (`pretrain/goodput_clock.py`) as the last record has them.
LAST_FIELDS = ("startup_s", "data_wait_s", "train_step_s", "checkpoint_save_s", "evaluation_s", "wall_time_s")


def read_records(text: str) -> list[dict]:
    """The records of a progress.jsonl, in order; a line cut short by a killed run is left out."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def summarize_run(records: list[dict]) -> dict | None:
    """One run's figures: the medians of `MEDIAN_FIELDS` over the steps after `WARMUP_STEPS` (every
    step if none is past it), the first and last loss, the steps the optimizer skipped (a
    non-finite gradient), and the last record's time accounts. None without a record."""
    if not records:
        return None
    steady = [r for r in records if r["step"] > WARMUP_STEPS] or records

    def median(key: str) -> float | None:
        values = [r[key] for r in steady if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]
        return round(statistics.median(values), 5) if values else None

    last = records[-1]
    return {
        "steps": last["step"],
        "steps_in_median": len(steady),
        "loss_first": records[0].get("loss"),
        "loss_last": last.get("loss"),
        "skipped_steps": sum(1 for r in records if r.get("skipped")),
        **{key: median(key) for key in MEDIAN_FIELDS},
        **{key: last.get(key) for key in LAST_FIELDS},
    }


def peak_memory_mib(samples: str) -> int | None:
    """The largest `memory.used` (MiB) among nvidia-smi's samples (`NVSMI_FIELDS` rows); None
    without a readable one."""
    column = NVSMI_FIELDS.index("memory.used")
    used = []
    for row in csv.reader(io.StringIO(samples)):
        try:
            used.append(int(float(row[column].strip())))
        except (IndexError, ValueError):
            continue
    return max(used) if used else None


# What in a run's log says a fast path was not taken or something went wrong (run.sh's grep).
NOTABLE = re.compile(
    r"falling back|not installed|recompil|memory efficient|flash attention|warn.*sdp|out of memory|error", re.I
)


def notable_lines(log: str, limit: int = 20) -> list[tuple[str, int]]:
    """The log's lines matching `NOTABLE`, each with how often it occurs, the most frequent first."""
    counts = Counter(line.strip() for line in log.splitlines() if NOTABLE.search(line))
    return counts.most_common(limit)


# -- rendering ----------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _figure(value: float | None, suffix: str = "") -> str:
    """One decimal from 1 up, two significant digits below (tiny's MFU is a fraction of a percent)."""
    if value is None:
        return "-"
    return f"{value:.1f}{suffix}" if abs(value) >= 1 else f"{value:.2g}{suffix}"


def _params(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"


PRETRAIN_HEADER = [
    "| preset | model (layers x hidden, params) | seq | micro x accum = global batch | steps | tokens/s "
    "| real tokens/s | real-token MFU | model TFLOP/s per GPU | step s | peak device memory MiB "
    "| loss first → last | skipped steps | run |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def pretrain_row(run: dict) -> str:
    """One preset's table row (`PRETRAIN_HEADER`); `-` where the run measured nothing."""
    shape, s = run.get("shape") or {}, run.get("summary") or {}
    model = f"{shape['layers']} x {shape['hidden']}, {_params(shape.get('params'))}" if shape else "-"
    batch = f"{shape['micro_batch']} x {shape['accumulation']} = {shape['global_batch']}" if shape else "-"
    loss = "-" if s.get("loss_first") is None else f"{s['loss_first']:.3f} → {s['loss_last']:.3f}"
    mfu = None if s.get("mfu") is None else 100 * s["mfu"]
    cells = [
        run["preset"],
        model,
        _fmt(shape.get("seq_length"), "d"),
        batch,
        _fmt(s.get("steps"), "d"),
        _fmt(s.get("tokens_per_s")),
        _fmt(s.get("real_tokens_per_s")),
        _figure(mfu, "%"),
        _figure(s.get("model_tflops_per_s_per_device")),
        _fmt(s.get("step_time_s"), ".4f"),
        _fmt(run.get("peak_memory_mib")),
        loss,
        _fmt(s.get("skipped_steps"), "d"),
        run.get("status", "-"),
    ]
    return "| " + " | ".join(cells) + " |"


def environment_line(env: dict | None) -> str:
    if not env:
        return "Environment: not reported (its stage did not finish)."
    optional = ", ".join(f"{name} {'present' if there else 'absent'}" for name, there in env["optional"].items())
    return (
        f"Environment: {env['gpu']} ({env['gpu_memory_gib']:.0f} GiB), Python {env['python']}, torch "
        f"{env['torch']}, CUDA {env['cuda']}, megatron-core {env['megatron_core']}; {optional}; "
        f"TransformerEngine layers: {'yes' if env['transformer_engine_layers'] else 'no'}."
    )


def render_pretrain(result: dict) -> list[str]:
    """The `gpu-pretrain` section's lines: what ran, the table, the environment."""
    peak = result.get("peak_tflops")
    mfu = (
        f"over the GPU's dense BF16 peak of {peak:g} TFLOP/s ({result.get('peak_source')})"
        if peak
        else f"not reported: {result.get('peak_source', 'no peak known')}"
    )
    return [
        "## GPU pretraining: tiny, base and large presets (bf16, one GPU)",
        "",
        "Each preset through sobert's own launch command (`sobert_operator.launch.pretrain_command`: "
        "`sobert_trainer.torchrun` over `sobert_trainer.pretrain`, one rank, TP=1, the pods' environment "
        f"variables) on datasets prepared from {', '.join(result.get('posts', []))} (vocab 4,000 for tiny, "
        "50,000 for base and large): tiny 40 steps in bf16; base 15 steps (an asynchronous save at step 8, "
        "a synchronous one at 15); large 15 steps at a global batch of 32 instead of 256. Figures are the "
        f"progress records' medians over the steps after the first {WARMUP_STEPS}. Real-token MFU: the "
        f"model's training FLOPs at the real (non-padding) tokens (`sobert_api.flops`) {mfu}. Peak device "
        "memory: the most memory nvidia-smi reported used on the GPU during the run (sampled every 0.5 s: "
        "the whole device, CUDA context and the allocator's cache included), not torch's allocated bytes.",
        "",
        *PRETRAIN_HEADER,
        *(pretrain_row(run) for run in result["runs"]),
        "",
        environment_line(result.get("environment")),
    ]


def _sdpa_lines(sdpa: dict | None, status: str) -> list[str]:
    if not sdpa:
        return [f"SDPA probe: no figures ({status})."]
    lines = [
        "`torch.nn.functional.scaled_dot_product_attention` as sobert's attention calls it "
        "(`pretrain/attention.py`: q, k, v permuted from [s, b, heads, head dim], dropout 0.1; a "
        "micro-batch without padding gets no mask, one with padding a [b, 1, 1, s] bias), forward + "
        "backward, against the calls that could replace it. TFLOP/s at the FLOPs sobert's MFU counts "
        "for attention (3 x 4·b·heads·s²·head dim).",
    ]
    for name, shape in sdpa["shapes"].items():
        b, h, s, d = shape["shape"]
        lines += ["", f"{name}: b {b}, heads {h}, seq {s}, head dim {d}", ""]
        lines += ["| call | ms | TFLOP/s | CUDA kernels |", "| --- | --- | --- | --- |"]
        for v in shape["variants"]:
            if "error" in v:
                lines.append(f"| {v['name']} | - | - | not run: {v['error']} |")
            else:
                kernels = ", ".join(f"`{k[:80]}`" for k in v["kernels"])
                lines.append(f"| {v['name']} | {v['ms']:.3f} | {v['tflops']:.1f} | {kernels} |")
    lines += ["", "Dense bf16 GEMMs at the layers' shapes (the ceiling the linear layers could reach):", ""]
    lines += ["| GEMM (m x k x n) | ms | TFLOP/s |", "| --- | --- | --- |"]
    lines += [f"| {g['name']} | {g['ms']:.3f} | {g['tflops']:.1f} |" for g in sdpa.get("gemm", [])]
    return lines


def _profile_lines(profile: dict | None, status: str) -> list[str]:
    if not profile:
        return [f"Profile of the base step: no figures ({status})."]
    p, mfu = profile, profile.get("mfu")
    lines = [
        f"Profile of the {p['preset']} step through sobert's own setup (`setup.setup_model_and_optimizer`, "
        f"`train._forward_step`, megatron's no-pipelining schedule) on synthetic full-length micro-batches "
        f"(no padding, as `dataset.FullLengthSamples` gives): micro-batch {p['micro_batch']} x "
        f"{p['accumulation']} x seq {p['seq_length']}. Median step {p['median_step_s']:.4f} s over "
        f"{p['steps']} steps, {p['tokens_per_s']:,.0f} tokens/s, {p['model_tflops_per_s']:.1f} model TFLOP/s"
        + ("" if mfu is None else f", MFU {100 * mfu:.1f}%")
        + f"; torch's peak allocated memory {p['max_allocated_gib']:.1f} GiB. Layer: "
        + ", ".join(f"{k} `{v}`" for k, v in p["layer"].items())
        + f"; optimizer `{', '.join(p['optimizer'])}`.",
        "",
        f"CUDA kernel time in one step: {p['cuda_ms']:.1f} ms of {1e3 * p['median_step_s']:.1f} ms wall.",
        "",
        "| kernels | ms | share |",
        "| --- | --- | --- |",
    ]
    total = sum(p["categories"].values()) or 1.0
    for name, ms in sorted(p["categories"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {ms:.2f} | {100 * ms / total:.1f}% |")
    lines += ["", "| top kernels | ms | calls |", "| --- | --- | --- |"]
    lines += [f"| `{k['name'][:100]}` | {k['ms']:.2f} | {k['count']} |" for k in p["top_kernels"][:8]]
    return lines


def render_kernels(result: dict) -> list[str]:
    """The `gpu-kernels` section's lines: the SDPA probe and the base step's profile."""
    stages = result.get("stages", {})
    return [
        "## GPU attention kernels and the base step's profile",
        "",
        *_sdpa_lines(result.get("sdpa"), stages.get("sdpa", "not run")),
        "",
        *_profile_lines(result.get("profile"), stages.get("profile", "not run")),
    ]


def sections(result: dict, *, date: str, machine: str, command: str) -> dict[str, str]:
    """Both sections of one `make bench-gpu`, for `bench_file.merge`."""
    stamp = {"date": date, "machine": machine, "command": command}
    pretrain_raw = {
        key: result.get(key) for key in ("runs", "stages", "environment", "peak_tflops", "peak_source", "posts")
    }
    kernels_raw = {key: result.get(key) for key in ("sdpa", "profile")}
    return {
        PRETRAIN_SECTION: section(PRETRAIN_SECTION, render_pretrain(result), raw=pretrain_raw, **stamp),
        KERNELS_SECTION: section(KERNELS_SECTION, render_kernels(result), raw=kernels_raw, **stamp),
    }
