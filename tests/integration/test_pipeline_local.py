"""The embedded pipeline for real: prepare on the real sample, torchrun pretraining (DP=2, TP=2),
checkpoints on local disk and on a real S3 server, kill/resume, SIGTERM, conversion parity."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sobert_api import build_spec, paths
from sobert_api.checkpoints import checkpoint_name, complete_checkpoints
from sobert_api.progress import read_progress
from sobert_api.storage import Storage
from sobert_operator.local_executor import LocalExecutor
from sobert_trainer.data.prepare import PrepareConfig

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def tiny_spec(name, storage_uri, so_dump, **parallel):
    return build_spec(
        {
            "preset": "tiny",
            "name": name,
            "data": {"posts": so_dump["posts"], "comments": so_dump["comments"]},
            "storage": {"uri": storage_uri},
            "parallel": {"procs_per_node": 2, **parallel},
        }
    )


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory, so_dump):
    """The real sample prepared (tiny preset's tokenizer size) and fetched: (spec, storage, manifest, dir)."""
    from sobert_trainer.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("prepared")
    spec = tiny_spec("p", str(root / "store"), so_dump)
    storage = Storage.open(spec.storage.uri)
    manifest = prepare_dataset(PrepareConfig.from_spec(spec), storage)
    storage.fetch_tree(f"data/{manifest['dataset_id']}", root / "fetched")
    return spec, storage, manifest, root / "fetched"


def test_prepare_real_sample_publishes_megatron_shards(real_dataset):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from sobert_trainer.data.prepare import prepare_dataset

    spec, storage, manifest, dataset_dir = real_dataset
    counts = manifest["counts"]
    assert counts["posts"]["rows"] == 326 + 2354 and counts["posts"]["bad_total"] == 0
    assert counts["comments"]["rows"] == 398
    assert counts["skipped"]["post type 4"] == 58  # tag wikis are not pretraining text
    assert counts["documents"] > 2500 and counts["tokens"] > 400_000
    shard = IndexedDataset(str(dataset_dir / manifest["shards"][0]))
    assert len(shard.document_indices) - 1 == counts["shard_documents"]
    assert int(shard.sequence_lengths.sum()) == counts["tokens"]
    # Same inputs and settings: found, not rebuilt.
    started = time.monotonic()
    assert prepare_dataset(PrepareConfig.from_spec(spec), storage) == manifest
    assert time.monotonic() - started < 2


def _samples_at(
    dataset_dir: Path, manifest: dict, seq_length: int, count: int, cache: Path, spec=None, dataset_class=None
) -> list[dict]:
    """The first `count` pretraining samples Megatron's BERT dataset makes at `seq_length` (with
    `spec`'s masking and seed, else the defaults), built the way pretraining builds them (one
    process group of one rank), or by `dataset_class`."""
    import socket

    import torch.distributed as dist

    from sobert_trainer.pretrain.dataset import build_dataset, dataset_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        mask_prob, seed = (spec.train.mask_prob, spec.train.seed) if spec else (0.15, 1234)
        config = dataset_config(dataset_dir, manifest, seq_length, mask_prob, seed, cache=cache)
        dataset = build_dataset(config, count, on_this_rank=lambda: True, dataset_class=dataset_class)
        return [dataset[i] for i in range(count)]
    finally:
        dist.destroy_process_group()


def test_samples_at_seq_2048_are_packed_real_tokens_and_deterministic(real_dataset, tmp_path):
    """At the paper's sequence length the samples are at least 99.9% real tokens (posts average
    ~200 tokens: one post per sample was ~90% padding; megatron's room for a second [SEP] left a pad
    in every sample), each real to its end but the last of a Megatron document (so most
    micro-batches need no attention mask), never longer than the sequence, and the same samples
    come out of a rebuild (what resume and parity rely on)."""
    _, _, manifest, dataset_dir = real_dataset
    count = manifest["counts"]["tokens"] // 2048
    samples = _samples_at(dataset_dir, manifest, 2048, count, tmp_path / "index-a")
    assert all(s["text"].shape == (2048,) for s in samples)
    real = sum(int(s["padding_mask"].sum()) for s in samples) / (2048 * len(samples))
    short = sum(1 for s in samples if not s["padding_mask"].all())
    documents = manifest["counts"]["shard_documents"]
    # `count` runs a few samples into a second epoch, whose first documents end there too.
    assert short <= 2 * documents, f"{short} of {len(samples)} samples end in padding ({documents} documents)"
    # Only a document's last sample is short: ~1 in 512 for the ~1M-token documents of a full dump
    # (>= 99.9% real), more here, where the sample's pieces make documents of ~100k tokens.
    assert real >= 0.998, f"{real:.2%} of the tokens in {len(samples)} samples are real"
    again = _samples_at(dataset_dir, manifest, 2048, count, tmp_path / "index-b")
    for first, second in zip(samples, again, strict=True):
        assert all(np.array_equal(first[k], second[k]) for k in ("text", "labels", "loss_mask", "padding_mask"))


def test_samples_at_seq_2048_are_megatrons_own(real_dataset, tmp_path):
    """The vectorised samples pretraining trains on (`masking.MegatronBertSamples`) are the ones
    megatron-core's `BERTMaskedWordPieceDataset` builds, array for array, over the real sample."""
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset

    _, _, manifest, dataset_dir = real_dataset
    count = manifest["counts"]["tokens"] // 2048
    samples = _samples_at(dataset_dir, manifest, 2048, count, tmp_path / "index-a")
    reference = _samples_at(dataset_dir, manifest, 2048, count, tmp_path / "index-b", None, BERTMaskedWordPieceDataset)
    assert sum(s["truncated"] for s in reference) > count // 2  # the trim is exercised
    for index, (got, expected) in enumerate(zip(samples, reference, strict=True)):
        assert all(np.array_equal(got[k], expected[k]) for k in expected), f"sample {index} differs"


@pytest.fixture(scope="module")
def dp2_run(tmp_path_factory, so_dump):
    """A complete tiny run on 2 CPU ranks (data parallel), local storage."""
    root = tmp_path_factory.mktemp("dp2")
    spec = tiny_spec("dp2", str(root / "store"), so_dump)
    summary = LocalExecutor(spec, root / "work", emit=lambda _l: None).run()
    return spec, summary, root


def test_progress_counts_real_tokens_as_the_samples_hold_them(dp2_run, tmp_path):
    """Each record's real-token fraction is that of the samples the run fed since the previous
    record (rebuilt here from the same dataset, seed and sample count), its real tokens/s and
    model TFLOP/s follow from it, and MFU is null on CPU (no GPU peak)."""
    from sobert_api.flops import pretraining_flops_per_token

    spec, summary, _ = dp2_run
    storage = Storage.open(spec.storage.uri)
    records = read_progress(storage, spec.name)
    storage.fetch_tree(paths.dataset_prefix(summary.dataset_id), tmp_path / "data")
    manifest = storage.read_manifest(paths.dataset_prefix(summary.dataset_id))
    gbs, seq = spec.train.global_batch_size, spec.model.seq_length
    samples = _samples_at(tmp_path / "data", manifest, seq, spec.train_iters * gbs, tmp_path / "index", spec)
    previous = 0
    for record in records:
        fed = samples[previous * gbs : record["step"] * gbs]
        expected = sum(int(s["padding_mask"].sum()) for s in fed) / (len(fed) * seq)
        assert record["real_token_fraction"] == pytest.approx(expected, abs=1e-5), record
        assert record["real_tokens_per_s"] == pytest.approx(record["tokens_per_s"] * expected, rel=1e-3)
        flops_per_token = pretraining_flops_per_token(spec.model, spec.train.mask_prob)
        tflops = record["real_tokens_per_s"] * flops_per_token / record["world_size"] / 1e12
        assert record["model_tflops_per_s_per_device"] == pytest.approx(tflops, rel=1e-3, abs=1e-4)
        assert record["mfu"] is None
        previous = record["step"]


def test_dp2_pretrain_converges_and_converts(dp2_run):
    spec, summary, _ = dp2_run
    storage = Storage.open(spec.storage.uri)
    progress = read_progress(storage, spec.name)
    assert progress[-1]["step"] == spec.train_iters == summary.observed.checkpoint_step
    assert progress[-1]["world_size"] == 2
    assert progress[-1]["consumed_tokens"] == spec.train_iters * 16 * 128
    assert progress[-1]["loss"] < progress[0]["loss"] - 0.2  # it learns
    assert summary.observed.hf_step == spec.train_iters
    from transformers import MegatronBertForMaskedLM

    model = MegatronBertForMaskedLM.from_pretrained(storage.uri(paths.hf_prefix(spec.name)))
    assert model.config.model_type == "megatron-bert" and model.config.num_hidden_layers == 2


def test_the_report_shows_the_eta_history_against_the_actual_end(dp2_run):
    """The local executor estimated the run's progress and ETA as each stage began and ended (and
    during pretraining); the report lists them against the end the run reached."""
    spec, _, _ = dp2_run
    storage = Storage.open(spec.storage.uri)
    report = storage.read_json(f"{paths.cost_prefix(spec.name)}/report.json")
    history, ledger = report["eta"], report["ledger"]
    points = history["points"]
    stages = [p["stage"] for p in points]
    order = ["prepare", "pretrain", "convert", None]
    assert list(dict.fromkeys(stages)) == order, stages  # every stage, in order, then done
    assert all(a["at_s"] <= b["at_s"] for a, b in itertools.pairwise(points))
    assert all(p["estimated_end_s"] == pytest.approx(p["at_s"] + p["remaining_s"], abs=0.11) for p in points)
    last_end = max(a["end"] for a in ledger) - history["started_at"]
    assert history["ended_s"] == pytest.approx(last_end, abs=5)
    assert points[-1]["progress_percent"] == 100 and points[-1]["remaining_s"] == 0
    page = storage.read_bytes(f"{paths.cost_prefix(spec.name)}/report.html").decode()
    assert "Progress and ETA" in page and "Where the money went" in page
    assert page.count("data:image/png") == 4  # spend, spend by phase, pretraining loss, ETA


def _event_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files of `directory`, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    reader = EventMultiplexer().AddRunsFromDirectory(str(directory))
    reader.Reload()
    scalars: dict[str, list[tuple[int, float]]] = {}
    for run, tags in reader.Runs().items():
        for tag in tags["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in reader.Scalars(run, tag))
    return scalars


def test_tensorboard_event_files_hold_the_progress_records_scalars(dp2_run):
    """`tensorboard --logdir runs/<run>/pretrain/tensorboard` shows what progress.jsonl holds,
    under Megatron-LM's names, against the step and (for loss, lr, grad norm) consumed samples."""
    spec, _, _ = dp2_run
    storage = Storage.open(spec.storage.uri)
    records = read_progress(storage, spec.name)
    scalars = _event_scalars(Path(storage.uri(paths.pretrain_prefix(spec.name))) / "tensorboard")
    gbs = spec.train.global_batch_size
    for field, tag in (("loss", "lm loss"), ("lr", "learning-rate"), ("grad_norm", "grad-norm"),
                       ("step_time_s", "iteration-time"), ("real_tokens_per_s", "real-tokens-per-s"),
                       ("model_tflops_per_s_per_device", "throughput"), ("world_size", "world-size")):  # fmt: skip
        expected = [(r["step"], pytest.approx(r[field], rel=1e-6)) for r in records]
        assert sorted(scalars[tag]) == expected, tag
    assert sorted(scalars["lm loss vs samples"]) == [(r["step"] * gbs, pytest.approx(r["loss"], rel=1e-6))
                                                     for r in records]  # fmt: skip
    held_out = [(r["step"], pytest.approx(r["validation_lm_loss"], rel=1e-6)) for r in records
                if "validation_lm_loss" in r]  # fmt: skip
    assert held_out and sorted(scalars["lm loss validation"]) == held_out
    assert "mfu" not in scalars  # null on CPU: no GPU peak, nothing plotted


def run_parity(spec, storage, step, saved_tp, tmp_path):
    ckpt = tmp_path / "ckpt"
    storage.child(paths.checkpoints_prefix(spec.name)).fetch_tree(checkpoint_name(step), ckpt)
    hf = tmp_path / "hf"
    storage.fetch_tree(paths.hf_prefix(spec.name), hf)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    out = subprocess.run(
        [sys.executable, str(HERE / "parity_check.py"), str(ckpt), str(hf), str(spec_file), str(saved_tp)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_conversion_parity_dp2(dp2_run, tmp_path):
    spec, summary, _ = dp2_run
    result = run_parity(spec, Storage.open(spec.storage.uri), summary.observed.checkpoint_step, 1, tmp_path)
    assert result["max_abs_diff"] < 1e-5


def test_tp2_run_on_s3_checkpoints_and_converts(s3_bucket, so_dump, tmp_path):
    spec = tiny_spec("tp2", f"s3://{s3_bucket}/sobert", so_dump, tensor_parallel=2)
    summary = LocalExecutor(spec, tmp_path / "work", emit=lambda _l: None).run()
    storage = Storage.open(spec.storage.uri)
    steps = complete_checkpoints(storage.child(paths.checkpoints_prefix(spec.name)))
    assert steps[-1] == spec.train_iters and len(steps) <= 2  # older checkpoints pruned
    manifest = storage.child(paths.checkpoints_prefix(spec.name)).read_manifest(checkpoint_name(steps[-1]))
    assert manifest["tensor_parallel"] == 2 and manifest["files"]
    # Converted from TP=2 shards, compared with the checkpoint loaded (resharded) by megatron-core.
    result = run_parity(spec, storage, summary.observed.checkpoint_step, 2, tmp_path)
    assert result["max_abs_diff"] < 1e-5


def _pretrain_command(spec, workdir: Path, dataset_id: str) -> list[str]:
    """The local executor's pretraining command for `spec` (written to `workdir`/spec.json) over
    the published dataset `dataset_id`, with `workdir`/scratch as its node-local disk."""
    from sobert_operator.launch import LOCAL_GRACE_SECONDS, LaunchTarget, pretrain_command

    spec_file = workdir / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    return pretrain_command(
        spec,
        str(spec_file),
        dataset_id,
        str(workdir / "scratch"),
        target=LaunchTarget.local,
        grace_seconds=LOCAL_GRACE_SECONDS,
        python=sys.executable,
    )


def _start_pretrain(spec, workdir: Path):
    executor = LocalExecutor(spec, workdir, emit=lambda _l: None)
    from sobert_operator.run_record import record_spec

    record_spec(spec, executor.storage)
    if not executor.observe().dataset_published:
        executor.run_stage(executor_stage("prepare"))
    command = _pretrain_command(spec, workdir, executor.dataset_id)
    log = open(workdir / "pretrain.log", "a")  # noqa: SIM115 - handed to the child process
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), executor


def executor_stage(name):
    from sobert_operator.pipeline import Stage

    return Stage(name)


def _wait_for(predicate, timeout=240, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def long_tiny_spec(name, storage_uri, so_dump, steps: int = 200):
    """`tiny_spec` run for `steps` steps (a checkpoint every 20): long enough that a signal sent
    mid-run lands mid-run (the tiny preset's 40 steps take a few seconds)."""
    document = tiny_spec(name, storage_uri, so_dump).model_dump(mode="json")
    document["train"]["train_tokens"] = steps * document["train"]["global_batch_size"] * document["model"]["seq_length"]
    return build_spec(document)


def test_kill_mid_run_then_resume_reaches_the_same_step(tmp_path, so_dump):
    spec = long_tiny_spec("resume", str(tmp_path / "store"), so_dump)
    storage = Storage.open(spec.storage.uri)
    checkpoints = storage.child(paths.checkpoints_prefix(spec.name))
    process, executor = _start_pretrain(spec, tmp_path / "w")
    _wait_for(lambda: bool(complete_checkpoints(checkpoints)))
    # A node crash: every process of the tree dies at once, with no chance to save. (torchrun
    # starts its workers in their own sessions, so a process-group kill would orphan them.)
    import psutil

    # Stop the tree first, until no new child appears (a rank may fork an async save's writer
    # meanwhile; one forked after a single snapshot outlived the kill as an orphan), then kill it.
    tree: set[int] = set()
    while new := {process.pid, *(c.pid for c in psutil.Process(process.pid).children(recursive=True))} - tree:
        for pid in new:
            with contextlib.suppress(ProcessLookupError):  # a short-lived child ended
                os.kill(pid, signal.SIGSTOP)
        tree |= new
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    killed_at = complete_checkpoints(checkpoints)[-1]
    assert killed_at < spec.train_iters, "the kill came after the run ended"
    executor.run()  # resumes pretraining, then converts
    assert complete_checkpoints(checkpoints)[-1] == spec.train_iters
    steps = [r["step"] for r in read_progress(storage, spec.name)]
    assert killed_at + 1 in steps and steps[-1] == spec.train_iters  # the first step after the resume
    # Each training process left its own TensorBoard event file; the resumed one holds every step
    # from the resume on (the killed one's last upload may trail its last progress record).
    tensorboard = Path(storage.uri(paths.pretrain_prefix(spec.name))) / "tensorboard"
    assert len(list(tensorboard.glob("events.out.tfevents.*"))) == 2
    plotted = {step for step, _ in _event_scalars(tensorboard)["lm loss"]}
    assert {s for s in steps if s > killed_at} <= plotted <= set(steps)
    # The report prices the restart: the second process restored a checkpoint, and the steps the
    # first one ran past it (as far as its records show) are work lost to the restart.
    records = read_progress(storage, spec.name)
    first, second = sorted({r["process_started_at"] for r in records})
    redone = max(r["step"] for r in records if r["process_started_at"] == first) - killed_at
    assert {r["resumed_from"] for r in records if r["process_started_at"] == second} == {killed_at}
    report = storage.read_json(f"{paths.cost_prefix(spec.name)}/report.json")
    pretrain = report["goodput"]["by_phase"]["pretrain"]
    assert sum(pretrain.values()) == pytest.approx(report["spent"]["by_phase"]["pretrain"])
    assert pretrain["checkpoint_restore"] > 0 and pretrain["startup"] > 0 and pretrain["productive"] > 0
    assert pretrain["evaluation"] > 0  # the validation loss, every eval_interval steps
    assert (pretrain["lost_to_restarts"] > 0) == (redone > 0)


def test_sigterm_checkpoints_the_current_step_and_exits(tmp_path, so_dump):
    spec = long_tiny_spec("sigterm", str(tmp_path / "store"), so_dump)
    storage = Storage.open(spec.storage.uri)
    process, _ = _start_pretrain(spec, tmp_path / "w")
    _wait_for(lambda: any(r["step"] >= 5 for r in read_progress(storage, spec.name)))
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=120)
    steps = complete_checkpoints(storage.child(paths.checkpoints_prefix(spec.name)))
    assert steps and 5 <= steps[-1] < spec.train_iters
    assert "SIGTERM received; checkpointed step" in (tmp_path / "w" / "pretrain.log").read_text()


def test_a_dataset_the_model_cannot_embed_is_refused_before_a_step(real_dataset, tmp_path):
    """Pretraining pointed at a dataset whose tokenizer has more tokens than the model's embedding
    has rows (the tiny preset's dataset under a 1,000-token model) exits 2 on every rank before it
    fetches the shards or builds the model, naming both sizes: on a GPU the first batch would
    index past the embedding, a device-side assert that names neither. Its output is read through
    a pipe to the end: nothing the ranks started (the checkpoint writer's Manager) outlives them
    holding it open."""
    from sobert_api.stages import EXIT_BAD_INPUT

    prepared, _, manifest, _ = real_dataset
    tokens = manifest["tokenizer"]["vocab_size"]
    document = prepared.model_dump(mode="json")
    document["name"] = "narrow"
    document["model"]["vocab_size"] = 1000
    spec = build_spec(document)
    command = _pretrain_command(spec, tmp_path, manifest["dataset_id"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    said = f"its tokenizer has {tokens} tokens, more than model.vocab_size (1000)"
    assert done.returncode == EXIT_BAD_INPUT and said in done.stdout + done.stderr, (
        done.stdout[-3000:] + done.stderr[-3000:]
    )
    assert not (tmp_path / "scratch" / "data").exists()  # refused before anything was fetched


def test_a_diverged_run_stops_at_the_step_it_diverged_with_a_permanent_exit(tmp_path, so_dump):
    """A learning rate far too large (a deliberately bad input) drives the weights past fp32's range
    within a few steps: megatron-core's gradient check (on, as in Megatron-LM) rejects the NaN, and
    the stage exits 1 (permanent under `restartPolicy: ExitCode`) naming the step and what to
    change, instead of training on NaN weights to the end."""
    from sobert_api.stages import EXIT_FAILED

    document = tiny_spec("diverged", str(tmp_path / "store"), so_dump).model_dump(mode="json")
    document["train"] |= {"lr": 1e36, "min_lr": 0.0, "log_interval": 1}
    spec = build_spec(document)
    process, executor = _start_pretrain(spec, tmp_path / "w")
    assert process.wait(timeout=300) == EXIT_FAILED
    log = (tmp_path / "w" / "pretrain.log").read_text()
    diverged = re.search(r"error: pretrain: the run diverged at step (\d+): non-finite gradients", log)
    assert diverged, log[-3000:]
    steps = [r["step"] for r in read_progress(executor.storage, spec.name)]
    # Mid-run: after steps that trained (and were logged), before the last.
    assert 1 <= max(steps, default=0) < int(diverged.group(1)) < spec.train_iters, (steps, log[-3000:])
    assert re.search(r"torchrun: worker exit codes \[[-\d, ]+\]; exit 1$", log, re.M), log[-3000:]
