"""`make bench-gpu` where no GPU is: it says so and changes nothing; its per-preset figures from
progress records of the trainer's format; its sections in BENCHMARKS.md, replaced by a re-run; the
launch command it runs for each preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench_file import measurement_name, merge, sections_of  # scripts/: on sys.path (testbed_plugin)
from bench_gpu import NO_CUDA, RUNS, Bench, catalog_peak, launch_command, run_spec, stamp_command
from gpu_bench import summary

from conftest import ROOT

STAMP = {"date": "2026-12-06", "machine": "1 x NVIDIA H200", "command": "python scripts/bench_gpu.py"}


def record(step: int, step_time_s: float, loss: float, skipped: bool = False, **extra) -> dict:
    """A progress record as `Trainer.log_step` writes it (the fields the summary reads)."""
    tokens_per_s = 2048 * 256 / step_time_s
    return {
        "step": step,
        "loss": loss,
        "skipped": skipped,
        "step_time_s": step_time_s,
        "tokens_per_s": tokens_per_s,
        "real_tokens_per_s": tokens_per_s * 0.99,
        "real_token_fraction": 0.99,
        "model_tflops_per_s_per_device": 100.0 / step_time_s,
        "mfu": 0.1 / step_time_s,
        "startup_s": 30.0,
        "data_wait_s": 0.5 * step,
        **extra,
    }


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# Three warm-up steps far slower than the rest: they must not reach a median.
RECORDS = [
    record(1, 20.0, 10.8),
    record(2, 9.0, 10.1),
    record(3, 8.0, 9.7, skipped=True),
    record(4, 1.0, 9.2),
    record(5, 2.0, 8.8, skipped=True),
    record(6, 4.0, 8.5),
]


def run_row(**fields) -> dict:
    shape = {"layers": 12, "hidden": 768, "params": 110_000_000, "seq_length": 2048}
    shape |= {"micro_batch": 8, "accumulation": 32, "global_batch": 256, "steps": 15}
    return {"name": "bench-gpu-base", "preset": "base", "status": "ok", "shape": shape, **fields}


def result(runs: list[dict]) -> dict:
    return {"runs": runs, "stages": {}, "posts": ["Posts.xml"], "peak_tflops": 989.0, "peak_source": "catalog h200"}


def test_without_cuda_it_says_so_exits_0_and_changes_nothing(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text((ROOT / "BENCHMARKS.md").read_text())
    before = benchmarks.read_bytes()
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--benchmarks", str(benchmarks), "--out", str(out)],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == NO_CUDA
    assert benchmarks.read_bytes() == before
    assert not out.exists()


def test_a_run_is_summarised_over_the_steps_after_the_warm_up():
    figures = summary.summarize_run(summary.read_records(_jsonl(RECORDS) + '{"step": 7, "loss"'))
    assert figures["steps"] == 6 and figures["steps_in_median"] == 3  # the line cut short by a kill left out
    assert figures["step_time_s"] == 2.0  # median of 1, 2, 4
    assert figures["tokens_per_s"] == 2048 * 256 / 2.0
    assert figures["real_token_fraction"] == 0.99
    assert figures["mfu"] == 0.05
    assert (figures["loss_first"], figures["loss_last"], figures["skipped_steps"]) == (10.8, 8.5, 2)
    assert (figures["startup_s"], figures["data_wait_s"]) == (30.0, 3.0)  # the last record's accounts
    assert summary.summarize_run([]) is None
    short = summary.summarize_run(RECORDS[:2])  # no step past the warm-up: every step counts
    assert short["steps_in_median"] == 2 and short["step_time_s"] == 14.5


def test_peak_memory_is_the_largest_sample_of_the_run():
    samples = "2026/12/06 10:00:00.000, 515, 0, 70.1\n2026/12/06 10:00:00.500, 61234, 98, 690.5\n"
    assert summary.peak_memory_mib(samples + "2026/12/06 10:00:01.000, 60000, [N/A], [N/A]\n") == 61234
    assert summary.peak_memory_mib("") is None


def test_the_table_has_a_row_per_preset_with_dashes_where_nothing_was_measured():
    measured = run_row(summary=summary.summarize_run(RECORDS), peak_memory_mib=61234)
    skipped = {"name": "bench-gpu-large", "preset": "large", "status": "skipped: 40 s left of 170"}
    lines = summary.render_pretrain(result([measured, skipped]))
    assert lines[0] == "## GPU pretraining: tiny, base and large presets (bf16, one GPU)"
    assert "989 TFLOP/s (catalog h200)" in lines[2]
    header = lines.index(summary.PRETRAIN_HEADER[0])
    assert lines[header + 2] == (
        "| base | 12 x 768, 110.0M | 2048 | 8 x 32 = 256 | 6 | 262,144 | 259,523 | 5.0% | 50.0 | 2.0000 "
        "| 61,234 | 10.800 → 8.500 | 2 | ok |"
    )
    assert lines[header + 3] == "| large | - | - | - | - | - | - | - | - | - | - | - | - | skipped: 40 s left of 170 |"
    assert lines[-1] == "Environment: not reported (its stage did not finish)."


def test_the_sections_merge_into_benchmarks_and_a_rerun_replaces_them():
    existing = (ROOT / "BENCHMARKS.md").read_text()
    first = summary.sections(result([run_row(summary=summary.summarize_run(RECORDS))]), **STAMP)
    merged = merge(existing, first)
    names = [measurement_name(block) for block in sections_of(merged)]
    assert names.count(summary.PRETRAIN_SECTION) == 1 and names.count(summary.KERNELS_SECTION) == 1
    # The placeholder BENCHMARKS.md holds until a GPU run is the section the run replaces, in place.
    assert names.index(summary.PRETRAIN_SECTION) == [measurement_name(b) for b in sections_of(existing)].index(
        summary.PRETRAIN_SECTION
    )
    assert "Not measured as of" not in merged
    assert "Measured 2026-12-06 on 1 x NVIDIA H200, with `python scripts/bench_gpu.py`." in first["gpu-pretrain"]
    assert "SDPA probe: no figures (not run)." in first["gpu-kernels"]
    faster = [record(r["step"], r["step_time_s"] / 2, r["loss"]) for r in RECORDS]
    second = summary.sections(result([run_row(summary=summary.summarize_run(faster))]), **STAMP)
    remerged = merge(merged, second)
    assert len(sections_of(remerged)) == len(sections_of(merged))
    assert second["gpu-pretrain"] in remerged and first["gpu-pretrain"] not in remerged
    others = [b for b in sections_of(merged) if measurement_name(b) not in first]
    assert others == [b for b in sections_of(remerged) if measurement_name(b) not in second]


def test_each_preset_runs_through_the_projects_launch_command(tmp_path):
    """The spec each run trains (the issue's step counts and batch sizes) and the command the
    embedded backend would run for it, with the peak that makes the trainer log MFU."""
    specs = {run.preset: run_spec(run, tmp_path / "store", ["Posts.xml"]) for run in RUNS}
    assert {preset: spec.train_iters for preset, spec in specs.items()} == {"tiny": 40, "base": 15, "large": 15}
    assert specs["tiny"].train.precision.value == "bf16"
    assert specs["base"].train.global_batch_size == 256 and specs["large"].train.global_batch_size == 32
    assert specs["large"].gradient_accumulation_steps == 8
    base = RUNS[1]
    command = launch_command(base, specs["base"], tmp_path / "base.json", tmp_path / "scratch", 989.0)
    assert command[:3] == [sys.executable, "-m", "sobert_trainer.torchrun"]
    assert "--standalone" in command and "--nproc-per-node=1" in command
    assert command[command.index("-m", 2) + 1] == "sobert_trainer.pretrain"
    assert "--dataset-id=bench-gpu-v50k" in command and "--peak-tflops=989" in command


def test_the_peak_comes_from_the_price_catalog_by_the_gpus_product_name():
    assert catalog_peak(["NVIDIA H200"]) == (989.0, "the price catalog's `h200`, for NVIDIA H200")
    peak, why = catalog_peak(["NVIDIA GeForce RTX 4090"])
    assert peak is None and "no peak for NVIDIA GeForce RTX 4090" in why


def test_the_stamp_names_the_command_without_where_its_files_went():
    argv = ["--out", "/tmp/o", "--budget-s", "300", "--benchmarks=/x/B.md", "--workdir", "/w"]
    assert stamp_command(argv) == "python scripts/bench_gpu.py --budget-s 300"


def test_the_profiles_micro_batches_are_full_length_and_collated_as_the_loader_does():
    """profile_step.py feeds `dataset.collate` samples with no padding, as nearly every real one is:
    the batch is marked padding-free (no attention mask) and the LM head gets the masked positions."""
    import numpy as np
    from gpu_bench.profile_step import synthetic_samples

    from sobert_trainer.pretrain.dataset import collate

    batch = collate(synthetic_samples(4, 128, 4000, 0.15, np.random.default_rng(0)))
    masked = batch["loss_mask"].bool()
    assert batch["padding_free"] is True and bool(batch["padding_mask"].all())
    assert batch["head_positions"].numel() == int(masked.sum()) == 4 * int(0.15 * 128)
    labels = batch["labels"]
    assert bool((labels[masked] == batch["text"][masked]).all()) and bool((labels[~masked] == -1).all())


def test_the_profile_names_the_classes_the_built_model_runs_and_sorts_kernels(one_rank):
    from gpu_bench.profile_step import category, layer_classes

    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    spec = run_spec(RUNS[0], ROOT / "unused", ["Posts.xml"])
    bert = build_bert_model(spec.model, transformer_config(spec.model, tensor_parallel=1, bf16=False))
    classes = layer_classes(bert)
    assert classes["core attention"] == "sobert_trainer.pretrain.attention.SdpaDotProductAttention"  # no TE here
    assert "-" not in classes.values()
    kernels = {
        "nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT": "gemm",
        "fmha_cutlassF_bf16_aligned_64x128_rf_sm80": "attention",
        "ncclDevKernel_ReduceScatter_Sum_f32_RING_LL": "communication",
        "void at::native::vectorized_elementwise_kernel<4, ...>": "elementwise/norm/optimizer",
        "void at::native::(anonymous namespace)::CatArrayBatchedCopy": "elementwise/norm/optimizer",
        "Memcpy HtoD (Pinned -> Device)": "other",
    }
    assert {name: category(name) for name in kernels} == kernels


def test_the_kernel_section_shows_the_sdpa_probe_and_the_profile_split():
    """The figures `sdpa_probe.py` and `profile_step.py` write, as tables (shapes as theirs)."""
    sdpa = {
        "shapes": {
            "base": {
                "shape": [8, 12, 2048, 64],
                "variants": [
                    {"name": "sobert, no mask", "ms": 2.5, "tflops": 200.0, "kernels": ["pytorch_flash::flash_fwd"]},
                    {"name": "cuDNN forced", "error": "RuntimeError: No available kernel."},
                ],
            }
        },
        # no "gemm": the probe was stopped before it got there
    }
    profile = {
        "preset": "base", "micro_batch": 8, "accumulation": 4, "seq_length": 2048, "steps": 6,
        "median_step_s": 0.5, "tokens_per_s": 131072.0, "model_tflops_per_s": 250.0, "mfu": 0.2528,
        "max_allocated_gib": 40.0, "layer": {"core attention": "a.Sdpa"}, "optimizer": ["torch.optim.AdamW"],
        "cuda_ms": 450.0, "categories": {"gemm": 300.0, "attention": 150.0},
        "top_kernels": [{"ms": 10.0, "count": 96, "name": "nvjet_tst"}],
    }  # fmt: skip
    lines = summary.render_kernels({"sdpa": sdpa, "profile": profile, "stages": {}})
    assert "| sobert, no mask | 2.500 | 200.0 | `pytorch_flash::flash_fwd` |" in lines
    assert "| cuDNN forced | - | - | not run: RuntimeError: No available kernel. |" in lines
    assert "| gemm | 300.00 | 66.7% |" in lines and "| attention | 150.00 | 33.3% |" in lines
    assert "| `nvjet_tst` | 10.00 | 96 |" in lines
    assert any("Median step 0.5000 s over 6 steps, 131,072 tokens/s" in line and "MFU 25.3%" in line for line in lines)


def test_the_logs_fallbacks_and_errors_are_counted():
    log = "\n".join(
        ["UserWarning: Apex is not installed. Falling back to Torch Norm"] * 3
        + ["pretrain step 1/40 loss 8.3", "torch.OutOfMemoryError: CUDA out of memory.", "pretrain step 2/40"]
    )
    assert summary.notable_lines(log) == [
        ("UserWarning: Apex is not installed. Falling back to Torch Norm", 3),
        ("torch.OutOfMemoryError: CUDA out of memory.", 1),
    ]


def test_a_stage_past_its_time_is_stopped_with_its_whole_process_tree(tmp_path):
    """As torchrun's workers, the grandchild runs in a session of its own: it is stopped too."""
    bench = Bench(tmp_path, tmp_path, tmp_path / "BENCHMARKS.md", budget_s=60, command="test")
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "print('grandchild', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    lines: list[str] = []
    bench.say = lines.append  # type: ignore[method-assign]
    assert bench.run([sys.executable, "-c", script], limit=5) == "timed out after 5 s"
    pid = int(next(line for line in lines if line.startswith("grandchild")).split()[1])
    assert _gone(pid)
    assert bench.run([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], limit=30) == "exit 3"
    assert "out" in lines


def _gone(pid: int) -> bool:
    """The process has exited (a zombie is dead, waiting for init to reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
