"""`make bench`: measure this machine, and rewrite the measured sections of BENCHMARKS.md.

Each measurement (`MEASUREMENTS`) is a section of its own, dated, naming the machine and the
command (`bench_file.py`); `--only NAME,...` re-measures some and keeps the rest of the file.
- prepare: data prep throughput (tokens/s end to end, per worker, peak RSS) at 1 and 2 workers on a
  50 MB Posts.xml of real rows, next to the tokenizer-only encode speed of the same documents on
  one core: the ceiling a worker could reach if parsing, training and writing were free;
- real-tokens: the real-token fraction of the pretraining samples at sequence 128, 512 and 2,048,
  and the input pipeline's samples/s;
- masked-head: the base model's step with the LM head on every position vs the masked ones only;
- pretrain: tiny-preset pretraining step time and tokens/s under torchrun (1 rank, and DP=2), and
  the pretraining time forecast against it;
- finetune: each task's Ray Train job as `make run` runs it;
- controller: 200 SobertRuns at once against the real API server (`bench_controller.py`);
- forecast-vs-spend: `make run`'s forecast per phase against what its ledger charged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_controller import bench_controller  # noqa: E402
from bench_file import cpu_model, merge, section  # noqa: E402

SHARED_POSTS = ROOT.parent / "shared" / "data" / "stackoverflow_posts"


def machine() -> str:
    cpu = cpu_model()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    system = f"{platform.system()} {platform.release()}"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {system}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def sources() -> tuple[list[str], list[str]]:
    posts = [
        str(SHARED_POSTS / "stackoverflow.com-Posts.sample.xml"),
        str(SHARED_POSTS / "beer.stackexchange.com-Posts.xml"),
    ]
    if not Path(posts[0]).exists():
        fixture = ROOT / "tests" / "fixtures" / "dump"
        posts = [str(fixture / "example.stackexchange.com-Posts.xml")]
        comments = [str(fixture / "example.stackexchange.com-Comments.xml")]
    else:
        comments = [str(SHARED_POSTS / "stackoverflow.com-Comments.sample.xml")]
    return posts, comments


BENCH_DUMP_BYTES = 50_000_000
_IDS = re.compile(rb'(?<= )(Id|ParentId|AcceptedAnswerId)="(\d+)"')


def bench_dump(path: Path, size: int = BENCH_DUMP_BYTES) -> Path:
    """A Posts.xml of `size` bytes of real rows: the beer.stackexchange sample's rows repeated,
    each repetition with its ids moved by a million (fresh posts, answers pointing at their own
    questions), as the issue that set the target measured it. The fixture dump without ../shared."""
    source = SHARED_POSTS / "beer.stackexchange.com-Posts.xml"
    if not source.exists():
        source = ROOT / "tests" / "fixtures" / "dump" / "example.stackexchange.com-Posts.xml"
    rows = [line for line in source.read_bytes().splitlines() if line.strip().startswith(b"<row")]
    with open(path, "wb") as out:
        out.write(b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        written, repetition = 0, 0
        while written < size:
            for line in rows:
                moved = _IDS.sub(lambda m, shift=repetition * 1_000_000: _shifted(m, shift), line)
                out.write(moved + b"\n")
                written += len(moved) + 1
                if written >= size:
                    break
            repetition += 1
        out.write(b"</posts>\n")
    return path


def _shifted(match: re.Match, shift: int) -> bytes:
    return match.group(1) + b'="' + str(int(match.group(2)) + shift).encode() + b'"'


# Tokenizer samples for the prepare bench: the default (200,000 documents: every piece of a 50 MB dump
# is a sample piece, so training waits for the whole parse), and one whose sample pieces are half the
# pieces, as at dump scale (200,000 documents are 98 of ~12,000 8-MiB pieces of StackOverflow's
# Posts.xml): the tokenizer trains while the rest is parsed (`data/pipeline.py`).
PREPARE_SAMPLES = (200_000, 5_000)


def bench_prepare(dump: Path, workers: int, sample_docs: int = PREPARE_SAMPLES[0]) -> dict:
    """`sobertctl data prepare` on `dump` as a user runs it: process start to published manifest,
    and the peak RSS of its largest process (the CLI or one of its workers)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "sobertctl.main", "data", "prepare", "--posts", str(dump), "--out", tmp,
                   "--vocab-size", "50000", "--workers", str(workers),
                   "--tokenizer-train-docs", str(sample_docs)]  # fmt: skip
        probe = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        started = time.monotonic()
        peak_kib = int(subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True,
                                      text=True).stdout.strip())  # fmt: skip
        total = time.monotonic() - started
        manifest = json.loads(next(Path(tmp, "data").glob("*/manifest.json")).read_text())
    tokens = manifest["counts"]["tokens"]
    return {
        "workers": workers,
        "dump_bytes": dump.stat().st_size,
        "documents": manifest["counts"]["documents"],
        "tokens": tokens,
        "seconds_total": round(total, 2),
        "timings_s": manifest["timings_s"],
        "pipeline": manifest["pipeline"],
        "tokenizer_train_docs": sample_docs,
        "tokens_per_s_end_to_end": round(tokens / total),
        "tokens_per_s_per_core_end_to_end": round(tokens / total / workers),
        "peak_rss_mib": round(peak_kib / 1024),
    }


def bench_tokenizer_ceiling(dump: Path) -> dict:
    """The documents of `dump` encoded by a tokenizer trained on them, in one process on one core
    (`encode_batch_fast`, as the workers encode): what tokenizing alone reaches per core, with no
    parsing, training or writing."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from sobert_trainer.data.documents import DocumentStats, iter_documents
    from sobert_trainer.data.dump import RowStats
    from sobert_trainer.data.tokenizer import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        stats = DocumentStats(RowStats(), RowStats())
        docs = [d.segments for d in iter_documents([str(dump)], [], "post", Path(tmp), stats, min_chars=32)]
    tokenizer = train_tokenizer(("\n".join(s) for s in docs[:20_000]), 50_000)
    flat = [segment for segments in docs for segment in segments]
    started = time.monotonic()
    tokens = 0
    for start in range(0, len(flat), 4096):
        encodings = tokenizer.encode_batch_fast(flat[start : start + 4096], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encodings)
    seconds = time.monotonic() - started
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s_one_core": round(tokens / seconds)}


def bench_real_tokens(seq_lengths: tuple[int, ...] = (128, 512, 2048)) -> dict:
    """On the real sample (packed posts, docs/pretraining.md): the share of real (non-padding)
    tokens in one epoch of Megatron's BERT samples at each sequence length; and at 2,048, the
    samples/s one loader worker builds (vectorised, and megatron-core's own per-token Python for
    comparison) against what the base preset consumes per H100 at 45% MFU."""
    import socket

    import torch.distributed as dist
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset

    from sobert_api import build_spec
    from sobert_api.flops import pretraining_flops_per_token
    from sobert_api.storage import Storage
    from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset
    from sobert_trainer.pretrain.dataset import build_dataset, dataset_config, micro_batch_loader

    posts, comments = sources()
    rows, pipeline = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage.open(tmp)
        manifest = prepare_dataset(PrepareConfig(posts=posts, comments=comments, vocab_size=8_000), storage)
        storage.fetch_tree(f"data/{manifest['dataset_id']}", Path(tmp, "fetched"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        try:
            for seq in seq_lengths:
                count = manifest["counts"]["tokens"] // seq
                config = dataset_config(Path(tmp, "fetched"), manifest, seq, 0.15, 1234, cache=Path(tmp, f"idx-{seq}"))
                dataset = build_dataset(config, count, on_this_rank=lambda: True)
                started = time.monotonic()
                real = sum(int(dataset[i]["padding_mask"].sum()) for i in range(count))
                seconds = time.monotonic() - started
                rows.append(
                    {"seq_length": seq, "samples": count, "real_token_fraction": round(real / (count * seq), 5)}
                )
            # The last (2,048) dataset: one worker in this process, then two loader workers.
            pipeline["samples_per_s_one_worker"] = round(count / seconds, 1)
            megatrons = build_dataset(config, count, lambda: True, dataset_class=BERTMaskedWordPieceDataset)
            started = time.monotonic()
            for i in range(min(count, 100)):
                megatrons[i]
            pipeline["megatron_samples_per_s_one_worker"] = round(min(count, 100) / (time.monotonic() - started), 1)
            started = time.monotonic()
            # Ten epochs (the order wraps around the dataset), so worker start-up is not what is measured.
            batches = list(micro_batch_loader(dataset, 0, 10 * count // 8, 8, 4, 0, 1, workers=2, pin_memory=False))
            pipeline["samples_per_s_two_loader_workers"] = round(len(batches) * 4 / (time.monotonic() - started), 1)
            # Micro-batches the attention gets no mask for (dataset.collate's padding_free).
            free = sum(b["padding_free"] for b in batches)
            pipeline["padding_free_micro_batches_of_4"] = round(free / len(batches), 4)
        finally:
            dist.destroy_process_group()
    base = build_spec({"preset": "base", "name": "b", "data": {"posts": ["x"]}, "storage": {"uri": "/tmp/x"}})
    tokens_per_s = 0.45 * 989e12 / pretraining_flops_per_token(base.model, base.train.mask_prob)
    pipeline["base_samples_per_s_per_h100_at_45pct_mfu"] = round(tokens_per_s / base.model.seq_length, 1)
    return {"rows": rows, "pipeline": pipeline}


def render_real_tokens(result: dict) -> list[str]:
    rows, pipeline = result["rows"], result["pipeline"]
    lines = [
        "",
        "## Real tokens per pretraining sample (real sample, packed posts)",
        "",
        "One epoch of Megatron's BERT samples over the real StackOverflow + beer sample (posts packed",
        "FULL-SENTENCES style, samples real to their end but a Megatron document's last:",
        "docs/pretraining.md). Before samples were filled (megatron's room for a second [SEP] left one",
        "pad in each) it was 99.18% at 128, 99.73% at 512 and 99.38% at 2,048; before packing (one post",
        "per Megatron document, 10% short samples) 77.1%, 33.2% and 8.8%.",
        "",
        "| seq length | samples | real-token fraction |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {r['seq_length']:,} | {r['samples']:,} | {r['real_token_fraction']:.2%} |" for r in rows]
    lines += [
        "",
        f"Input pipeline at seq 2,048: one worker builds {pipeline['samples_per_s_one_worker']:,} samples/s "
        f"(megatron-core's own `BERTMaskedWordPieceDataset` builds the same samples at "
        f"{pipeline['megatron_samples_per_s_one_worker']:,}/s: `pretrain/masking.py`), two loader workers "
        f"{pipeline['samples_per_s_two_loader_workers']:,} through the DataLoader; the base preset at 45% MFU "
        f"consumes {pipeline['base_samples_per_s_per_h100_at_45pct_mfu']:,} samples/s per H100, "
        f"{pipeline['samples_per_s_one_worker'] / pipeline['base_samples_per_s_per_h100_at_45pct_mfu']:.1f}x less "
        "than one worker builds.",
    ]
    if "padding_free_micro_batches_of_4" in pipeline:
        lines += [
            "",
            f"Micro-batches of 4 at seq 2,048 with no padding, which reach the attention with no mask: "
            f"{pipeline['padding_free_micro_batches_of_4']:.1%}.",
        ]
    return lines


def bench_masked_head(seq_length: int = 512, micro_batch: int = 2, repeats: int = 3) -> dict:
    """Forward + backward of the base preset's model (12 x 768, vocab 50,000) on one micro-batch,
    with the LM head on every position and on the masked positions only (`pretrain/bert.py`);
    fp32 on this CPU at a sequence it can afford, the median of `repeats` after one warm-up."""
    import socket

    import numpy as np
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    from sobert_api import build_spec
    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.bert import per_token_loss
    from sobert_trainer.pretrain.dataset import collate
    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    base = build_spec(
        {
            "preset": "base",
            "name": "b",
            "data": {"posts": ["x"]},
            "storage": {"uri": "/tmp/x"},
            "model": {"hidden_dropout": 0.0, "attention_dropout": 0.0},
        }
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
    try:
        cpu_compat.install()
        model = build_bert_model(base.model, transformer_config(base.model, tensor_parallel=1, bf16=False))
        rng = np.random.default_rng(0)
        samples = [
            {
                "text": rng.integers(5, base.model.vocab_size, seq_length),
                "types": np.zeros(seq_length, dtype=np.int64),
                "labels": rng.integers(5, base.model.vocab_size, seq_length),
                "padding_mask": np.ones(seq_length, dtype=np.int64),
                "loss_mask": (rng.random(seq_length) < base.train.mask_prob).astype(np.int64),
            }
            for _ in range(micro_batch)
        ]
        batch = collate(samples)

        def step_seconds(masked_head: bool) -> float:
            times = []
            for _ in range(repeats + 1):
                model.zero_grad()
                started = time.monotonic()
                (per_token_loss(model, batch, masked_head) * batch["loss_mask"]).sum().backward()
                times.append(time.monotonic() - started)
            return statistics.median(times[1:])

        full, masked = step_seconds(False), step_seconds(True)
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
    return {
        "seq_length": seq_length,
        "micro_batch": micro_batch,
        "threads": torch.get_num_threads(),
        "full_head_s": round(full, 3),
        "masked_head_s": round(masked, 3),
        "masked_fraction": round(len(batch["head_positions"]) / (seq_length * micro_batch), 4),
    }


def render_masked_head(result: dict) -> list[str]:
    return [
        "",
        "## LM head at the masked positions only (base preset's model, CPU)",
        "",
        f"Forward + backward of the base model (12 layers, hidden 768, vocab 50,000; fp32, "
        f"{result['threads']} threads) on a micro-batch of {result['micro_batch']} x {result['seq_length']:,} "
        f"tokens, {result['masked_fraction']:.1%} of them masked: **{result['full_head_s']} s** with the LM head "
        f"on every position, **{result['masked_head_s']} s** with it at the masked positions only "
        f"({1 - result['masked_head_s'] / result['full_head_s']:.0%} less; `pretrain/bert.py`).",
    ]


def bench_pretrain(procs: int, steps: int) -> dict:
    posts, comments = sources()
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "sobertctl.main",
            "submit",
            "tiny",
            "--name",
            f"bench-{procs}",
            "--storage",
            f"{tmp}/store",
            "--workdir",
            f"{tmp}/work",
            "--procs-per-node",
            str(procs),
            "--posts",
            *posts,
            "--comments",
            *comments,
            "--set",
            f"train.train_tokens={steps * 16 * 128}",
            "--set",
            "train.log_interval=1",
            "--set",
            f"train.checkpoint_interval={steps}",
        ]
        started = time.monotonic()
        subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        run_seconds = time.monotonic() - started
        progress = [
            json.loads(line)
            for line in Path(f"{tmp}/store/runs/bench-{procs}/pretrain/progress.jsonl").read_text().splitlines()
        ]
        spec = json.loads(Path(f"{tmp}/store/runs/bench-{procs}/spec.json").read_text())
    steady = [r["step_time_s"] for r in progress[5:]]  # skip warm-up steps
    median = statistics.median(steady)
    return {
        "forecast": forecast_error(spec, progress),
        "run_seconds": round(run_seconds, 1),
        "ranks": procs,
        "steps_measured": len(steady),
        "step_time_s_median": round(median, 4),
        "step_time_s_p90": round(sorted(steady)[int(0.9 * (len(steady) - 1))], 4),
        "tokens_per_step": 16 * 128,
        "tokens_per_s": round(16 * 128 / median),
    }


def finetune_flags(shared: Path) -> list[str]:
    """The four tasks on the real training samples (never ../shared/eval); obsoletion on the project's
    own labelled CSV, as in `make run` (the shared sample yields no weak labels)."""
    data = shared / "data"
    return [
        "--finetune",
        f"quality={data / 'question_quality' / 'processed_valid_sample.jsonl'}",
        "--finetune",
        f"closed={data / 'closed_questions' / 'sample_2000.csv'}",
        "--finetune",
        f"ner={data / 'ner' / 'train.txt'},{data / 'ner' / 'dev.txt'}",
        "--finetune",
        f"obsoletion={ROOT / 'tests' / 'fixtures' / 'finetune' / 'obsoletion-labelled.csv'}",
    ]


def bench_finetune(examples: int) -> list[dict]:
    """Ray Train finetune throughput per task (2 CPU workers, tiny model, seq <= 128)."""
    posts, comments = sources()
    tasks = ("quality", "closed", "ner", "obsoletion")
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "sobertctl.main", "submit", "tiny", "--name", "bench-ft"]
        command += ["--storage", f"{tmp}/store", "--workdir", f"{tmp}/work", "--procs-per-node", "2"]
        command += ["--posts", *posts, "--comments", *comments, *finetune_flags(ROOT.parent / "shared")]
        for task in tasks:
            command += ["--set", f"finetune.tasks.{task}.max_train_examples={examples}"]
            command += ["--set", f"finetune.tasks.{task}.epochs=3"]
        subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows = []
        for task in tasks:
            metrics = json.loads(Path(f"{tmp}/store/runs/bench-ft/finetune/{task}/metrics.json").read_text())
            steady = [h["train_examples_per_second"] for h in metrics["history"][1:]]  # epoch 0 warms up
            rows.append(
                {
                    "task": task,
                    "train_examples": metrics["train_examples"],
                    "workers": metrics["workers"],
                    "max_length": metrics["recipe"]["max_length"],
                    "epochs": len(metrics["history"]),
                    "train_examples_per_s": round(statistics.median(steady), 1),
                    "job_seconds": metrics["seconds"],
                    "score": {metrics["primary_metric"]: round(metrics["score"], 4)},
                }
            )
    return rows


def render_finetune(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## Finetuning (Ray Train TorchTrainer on CPU, tiny model)",
        "",
        "Each task as `make run` runs it: a local Ray instance, 2 Ray Train workers (gloo DDP), batch 8,",
        "sequences up to 128 tokens, 3 epochs; throughput is the median over epochs after the first.",
        "The job time includes starting Ray, loading data and the per-epoch validation and checkpoint.",
        "",
        "| task | train examples | workers | examples/s | job s | validation score |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        score = ", ".join(f"{k} {v}" for k, v in r["score"].items())
        lines.append(
            f"| {r['task']} | {r['train_examples']} | {r['workers']} | {r['train_examples_per_s']} "
            f"| {r['job_seconds']} | {score} |"
        )
    return lines


def forecast_error(spec_document: dict, progress: list[dict]) -> dict:
    """The pretrain forecast against the measured training time: from the catalog's CPU MFU
    (before launch) and from the calibration window (steps 11-20 of progress.jsonl)."""
    from sobert_api import build_spec
    from sobert_operator.cost.catalog import load_catalog
    from sobert_operator.cost.devices import forecast_for
    from sobert_operator.cost.forecast import (
        PRETRAIN_STARTUP_S,
        PRETRAIN_TEARDOWN_S,
        calibrated_tokens_per_s,
        pretrain_tokens,
    )

    spec = build_spec(spec_document)
    phases = forecast_for(spec, load_catalog()).phases
    # The training loop's share: the stage's start-up and teardown are outside `wall_time_s`.
    before = next(p for p in phases if p.phase == "pretrain").seconds - PRETRAIN_STARTUP_S - PRETRAIN_TEARDOWN_S
    rate = calibrated_tokens_per_s([r for r in progress if r["step"] <= 20], window_steps=10)
    calibrated = pretrain_tokens(spec) / rate if rate else None
    measured = progress[-1]["wall_time_s"]
    return {
        "measured_train_s": measured,
        "forecast_before_launch_s": round(before, 2),
        "error_before_launch_pct": round(100 * (before - measured) / measured, 1),
        "forecast_calibrated_s": round(calibrated, 2) if calibrated else None,
        "error_calibrated_pct": round(100 * (calibrated - measured) / measured, 1) if calibrated else None,
    }


def bench_forecast_vs_spend() -> dict:
    """`make run` (the smoke run) into a fresh storage: each phase's forecast at submit and its
    final forecast (re-made from what the run measured) against what the ledger charged."""
    with tempfile.TemporaryDirectory() as storage:
        started = time.monotonic()
        subprocess.run(["make", "-s", "run", f"RUN_STORAGE={storage}", "RUN_NAME=bench"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        seconds = time.monotonic() - started
        report = json.loads(Path(storage, "runs", "bench", "cost", "report.json").read_text())
    submitted = {p["phase"]: p["usd"] for p in report["forecast_at_submit"]["phases"]}
    final = {p["phase"]: p["usd"] for p in report["forecast"]["phases"]}
    rows = []
    for phase in dict.fromkeys([*final, *report["spent"]["by_phase"]]):  # the run's order
        spent = report["spent"]["by_phase"].get(phase, 0.0)
        rows.append({
            "phase": phase,
            "forecast_at_submit_usd": submitted.get(phase),
            "final_forecast_usd": final.get(phase),
            "spent_usd": spent,
            "final_error_pct": round(100 * (final[phase] - spent) / spent, 1) if phase in final and spent else None,
        })  # fmt: skip
    return {"run_seconds": round(seconds, 1), "phases": rows, "goodput_fraction": report["goodput"]["goodput_fraction"]}


def render_forecast_vs_spend(result: dict) -> list[str]:
    from sobert_operator.cost.money import usd

    lines = [
        "",
        "## Forecast vs spend per phase (`make run`, this machine)",
        "",
        f"The smoke run ({result['run_seconds']} s end to end). At submit: before anything ran. Final: re-made "
        "after each stage from what the run measured (the dataset's tokens, pretraining's throughput and start-up, "
        "each finetune's first epoch; cost/forecast.py), plus each stage process's fixed start-up and teardown.",
        "",
        "| phase | forecast at submit | final forecast | spent | final error |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in result["phases"]:
        lines.append(
            f"| {r['phase']} | {usd(r['forecast_at_submit_usd'])} | {usd(r['final_forecast_usd'])} "
            f"| {usd(r['spent_usd'])} | {r['final_error_pct']}% |"
        )
    return [*lines, "", f"Goodput: {result['goodput_fraction']:.1%} of the run's dollars were productive.", ""]


def render_pretrain(rows: list[dict]) -> list[str]:
    lines = [
        "## Tiny preset pretraining and its time forecast (megatron-core on CPU, gloo)",
        "",
        "2 layers, hidden 64, seq 128, global batch 16 (micro 4); median over steady-state steps.",
        "",
        "| ranks | steps | median step s | p90 step s | tokens/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['ranks']} | {row['steps_measured']} | {row['step_time_s_median']} "
            f"| {row['step_time_s_p90']} | {row['tokens_per_s']:,} |"
        )
    return [*lines, "", *render_forecast_error(rows)]


def render_forecast_error(rows: list[dict]) -> list[str]:
    lines = [
        "Pretraining time forecast vs the training loop's measured time (`wall_time_s` of the last",
        "progress.jsonl line): before launch from the catalog's CPU figures (64 GFLOP/s per core, MFU",
        "0.05), and after calibration on steps 11-20. Stage start-up (torchrun, megatron-core init, data",
        "loading, checkpoint saves) is outside both and shown as the whole stage's time.",
        "",
        "| ranks | measured train s | forecast before launch s | error | calibrated forecast s | error | whole run s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        f = r["forecast"]
        lines.append(
            f"| {r['ranks']} | {f['measured_train_s']} | {f['forecast_before_launch_s']} | "
            f"{f['error_before_launch_pct']}% | {f['forecast_calibrated_s']} | {f['error_calibrated_pct']}% "
            f"| {r['run_seconds']} |"
        )
    return lines


def render_controller(c: dict) -> list[str]:
    if "skipped" in c:
        return ["", "## Controller", "", f"Skipped: {c['skipped']}."]
    return [
        "",
        f"## Controller ({c['runs']} SobertRuns submitted at once)",
        "",
        "Real kube-apiserver 1.35 + etcd on 127.0.0.1 (the test harness's), controller as a `kopf run`",
        "subprocess, all on the same cores as the bench. The bench plays the Job controller: it marks",
        "each prepare Job Complete as soon as it appears, 5 at a time (`--concurrent-job-syncs`), so",
        "the PyTorchJob latency includes one full stage transition.",
        "",
        "| from | to | median s | p99 s |",
        "| --- | --- | --- | --- |",
        f"| create call | prepare Job created | {c['to_prepare_job_s']['median']} | {c['to_prepare_job_s']['p99']} |",
        f"| create call | PyTorchJob created | {c['to_pytorchjob_s']['median']} | {c['to_pytorchjob_s']['p99']} |",
        f"| prepare Job Complete | PyTorchJob created | {c['prepare_done_to_pytorchjob_s']['median']} "
        f"| {c['prepare_done_to_pytorchjob_s']['p99']} |",
        "",
        f"{c['pytorchjobs_created']}/{c['runs']} PyTorchJobs created; submitting took {c['submit_seconds']} s. "
        f"Controller RSS: {c['controller_rss_mib']['idle']} MiB idle, {c['controller_rss_mib']['peak']} MiB peak; "
        f"controller CPU: {c['controller_cpu_ms_per_run']} ms per run.",
    ]


def render_prepare(prep: list[dict], ceiling: dict) -> list[str]:
    lines = [
        f"## Data preparation ({prep[0]['dump_bytes'] / 1e6:.0f} MB Posts.xml of real rows)",
        "",
        "`sobertctl data prepare` run as a process, start to published manifest, vocab 50,000, one "
        "document per post, on a Posts.xml of the beer.stackexchange sample's rows repeated with fresh "
        "ids (`bench_dump`). Peak RSS: the largest single process (the CLI or a worker).",
        "",
        "Times from the pipeline's start: the parse ends, BPE training begins and lasts, tokenizing goes on "
        "after the tokenizer is ready (it overlaps what remains of the parse).",
        "",
        "| workers | tokenizer sample (sample pieces / pieces) | documents | tokens | parse ends s | BPE begins s "
        "| BPE train s | tokenize+write s | total s | end-to-end tok/s | per worker tok/s | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in prep:
        t, layout = row["timings_s"], row["pipeline"]
        lines.append(
            f"| {row['workers']} | {row['tokenizer_train_docs']:,} ({layout['sample_pieces']} / {layout['pieces']}) "
            f"| {row['documents']:,} | {row['tokens']:,} | {t['parse']} | {t['tokenizer_train_began']} "
            f"| {t['tokenizer_train']} | {t['tokenize_and_write']} | {row['seconds_total']} "
            f"| {row['tokens_per_s_end_to_end']:,} "
            f"| {row['tokens_per_s_per_core_end_to_end']:,} | {row['peak_rss_mib']} |"
        )
    lines += [
        "",
        f"Ceiling: the same documents encoded by a tokenizer trained on them, one process on one core, with no "
        f"parsing, training or writing: **{ceiling['tokens_per_s_one_core']:,} tokens/s per core** "
        f"({ceiling['tokens']:,} tokens in {ceiling['seconds']} s).",
        "",
    ]
    return lines


@dataclass(frozen=True)
class Measurement:
    """One section of BENCHMARKS.md: how it is measured, and how its figures read."""

    measure: Callable[[argparse.Namespace], Any]
    render: Callable[[Any], list[str]]  # the section's lines, its `## ` title first


def _prepare(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        dump = bench_dump(Path(scratch, "bench.stackexchange.com-Posts.xml"), args.dump_mb * 1_000_000)
        runs = [bench_prepare(dump, 1), bench_prepare(dump, 2), bench_prepare(dump, 2, PREPARE_SAMPLES[1])]
        return {"runs": runs, "tokenizer_ceiling": bench_tokenizer_ceiling(dump)}


MEASUREMENTS: dict[str, Measurement] = {
    "prepare": Measurement(_prepare, lambda r: render_prepare(r["runs"], r["tokenizer_ceiling"])),
    "real-tokens": Measurement(lambda args: bench_real_tokens(), render_real_tokens),
    "masked-head": Measurement(lambda args: bench_masked_head(), render_masked_head),
    "pretrain": Measurement(lambda args: [bench_pretrain(p, args.steps) for p in (1, 2)], render_pretrain),
    "finetune": Measurement(lambda args: bench_finetune(args.finetune_examples), render_finetune),
    "controller": Measurement(lambda args: bench_controller(args.runs), render_controller),
    "forecast-vs-spend": Measurement(lambda args: bench_forecast_vs_spend(), render_forecast_vs_spend),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--only", help=f"Comma-separated measurements to run (default: all): {', '.join(MEASUREMENTS)}."
    )
    parser.add_argument("--dump-mb", type=int, default=50, help="Size of the Posts.xml data preparation runs on.")
    parser.add_argument("--steps", type=int, default=40, help="Pretraining steps per measurement.")
    parser.add_argument("--finetune-examples", type=int, default=192, help="Training examples per task.")
    parser.add_argument("--runs", type=int, default=200, help="SobertRuns submitted at once (controller bench).")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(MEASUREMENTS)
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"--only: unknown measurement(s) {', '.join(unknown)}; known: {', '.join(MEASUREMENTS)}")
    import warnings

    warnings.filterwarnings("ignore")
    host = machine()
    measured = {}
    for name in names:
        raw = MEASUREMENTS[name].measure(args)
        date = datetime.now(UTC).strftime("%Y-%m-%d")
        command = f"python scripts/bench.py --only {name}"
        measured[name] = section(
            name, MEASUREMENTS[name].render(raw), date=date, machine=host, command=command, raw=raw
        )
        print(measured[name], flush=True)
    existing = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(merge(existing, measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
