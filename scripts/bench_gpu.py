"""`make bench-gpu`: sobert's pretraining measured on this machine's GPU, appended to BENCHMARKS.md.

Without a CUDA device it says so and exits 0. With one it runs, in order, each stage only while
the time budget (`--budget-s`) allows, writing into `--out` as it goes (so a timeout still leaves
every result up to that point):

1. environment: Python, torch, CUDA, the GPU; whether TransformerEngine, apex and
   `fused_weight_gradient_mlp_cuda` import (`gpu_bench/environment.py`);
2. the SDPA probe: which kernel sobert's attention call gets, and its TFLOP/s (`gpu_bench/sdpa_probe.py`);
3. data: `sobertctl data prepare` of the posts at vocab 4,000 (tiny) and 50,000 (base, large);
4. tiny (40 steps, bf16), base (15 steps) and large (15 steps at global batch 32) through the
   project's own launch command, `sobert_operator.launch.pretrain_command`, with the pods'
   environment variables and the GPU's peak from the price catalog (so progress records carry
   MFU); nvidia-smi samples the device memory beside each run; checkpoints are deleted after it;
5. a profile of one base step through sobert's setup (`gpu_bench/profile_step.py`);
6. the `gpu-pretrain` and `gpu-kernels` sections of BENCHMARKS.md (`bench_file.merge`: a re-run
   replaces its own sections), written after every stage that measured something, and copied
   into `--out`.

`scripts/bench_gpu.sh` (what `make bench-gpu` runs) picks the Python and, on a machine without
the project's virtualenv, installs the wheels carried in `.whl/`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_file import cpu_model, merge  # noqa: E402
from gpu_bench import summary  # noqa: E402

NO_CUDA = "no CUDA device: make bench-gpu measures nothing here"
HELPERS = ROOT / "scripts" / "gpu_bench"
SHARED_POSTS = ROOT.parent / "shared" / "data" / "stackoverflow_posts"
FIXTURE_DUMP = ROOT / "tests" / "fixtures" / "dump"
GRACE_SECONDS = 60  # SIGTERM to SIGKILL for the launcher's workers
STOP_WAIT_S = 10  # a stage past its time gets SIGTERM, then SIGKILL this much later
NVSMI_INTERVAL_MS = 500


@dataclass(frozen=True)
class Dataset:
    id: str
    vocab_size: int


# Tiny's embedding has 4,096 rows: a token id of a 50,000-piece vocabulary would be out of range.
DATASETS = {"tiny": Dataset("bench-gpu-v4k", 4_000), "bert": Dataset("bench-gpu-v50k", 50_000)}


@dataclass(frozen=True)
class PresetRun:
    preset: str
    dataset: str  # a key of DATASETS
    overrides: dict[str, Any]  # dotted spec fields over the preset
    needs_s: int  # skipped with less time left; its time limit

    @property
    def name(self) -> str:
        return f"bench-gpu-{self.preset}"


RUNS = (
    PresetRun("tiny", "tiny", {"train.log_interval": 1, "train.precision": "bf16"}, 120),
    # 15 steps of 256 x 2,048 tokens; an asynchronous save at step 8, the final one synchronous.
    PresetRun(
        "base",
        "bert",
        {
            "train.train_tokens": 15 * 256 * 2048,
            "train.log_interval": 1,
            "train.checkpoint_interval": 8,
            "train.loader_workers": 4,
            "train.eval_iters": 2,
        },
        170,
    ),
    # Global batch 32 (accumulation 8) instead of 256, so that 15 steps fit in minutes. Both evaluate
    # 2 global batches after the last step (the preset's 10 would take several steps' time).
    PresetRun(
        "large",
        "bert",
        {
            "train.global_batch_size": 32,
            "train.train_tokens": 15 * 32 * 2048,
            "train.log_interval": 1,
            "train.loader_workers": 4,
            "train.eval_iters": 2,
        },
        170,
    ),
)
PROFILE_ARGS = ("--preset", "base", "--micro-batch", "8", "--accumulation", "4", "--steps", "6")
PROFILE_NEEDS_S = 70
DATA_NEEDS_S = 30


def no_cuda_reason() -> str | None:
    """Why nothing can be measured here (no torch, no CUDA device), or None."""
    try:
        import torch
    except ImportError:
        return f"no torch in {sys.executable}: make bench-gpu measures nothing here"
    return None if torch.cuda.is_available() else NO_CUDA


def default_posts() -> tuple[list[str], list[str]]:
    """The real StackOverflow + beer.stackexchange sample beside the checkout, else the fixture dump."""
    base = SHARED_POSTS if SHARED_POSTS.is_dir() else FIXTURE_DUMP
    return sorted(map(str, base.glob("*Posts*.xml"))), sorted(map(str, base.glob("*Comments*.xml")))


def run_spec(run: PresetRun, store: Path, posts: list[str]):
    """The RunSpec of one preset run (`data.posts` is required by validation, unused by pretraining)."""
    from sobert_api.loading import build_spec
    from sobertctl.specs import set_path

    document = {"name": run.name, "preset": run.preset, "storage": {"uri": str(store)}, "data": {"posts": posts}}
    for dotted, value in run.overrides.items():  # as `sobertctl --set` applies them
        document = set_path(document, dotted, value)
    return build_spec(document, source=run.name)


def shape_of(spec) -> dict[str, int]:
    return {
        "layers": spec.model.num_layers,
        "hidden": spec.model.hidden_size,
        "params": spec.model.parameter_count(),
        "seq_length": spec.model.seq_length,
        "micro_batch": spec.train.micro_batch_size,
        "accumulation": spec.gradient_accumulation_steps,
        "global_batch": spec.train.global_batch_size,
        "steps": spec.train_iters,
    }


def launch_command(run: PresetRun, spec, spec_path: Path, scratch: Path, peak_tflops: float | None) -> list[str]:
    """The command the embedded backend runs for pretraining, on this Python."""
    from sobert_operator.launch import LaunchTarget, pretrain_command

    return pretrain_command(
        spec,
        str(spec_path),
        DATASETS[run.dataset].id,
        str(scratch),
        target=LaunchTarget.local,
        grace_seconds=GRACE_SECONDS,
        python=sys.executable,
        peak_tflops=peak_tflops,
    )


def catalog_peak(names: list[str] | None = None) -> tuple[float | None, str]:
    """The first GPU's dense BF16 peak from the price catalog (`names`: nvidia-smi's product
    names, default asked), and where it came from, or None and why there is none."""
    from sobert_operator.cost.catalog import load_catalog
    from sobert_operator.cost.local_gpus import catalog_model, gpu_names, local_peak_tflops

    catalog, listed = load_catalog(), gpu_names() if names is None else names
    peak = local_peak_tflops(catalog, listed)
    if peak is None:
        product = listed[0] if listed else "no GPU nvidia-smi lists"
        return None, f"the price catalog has no peak for {product}: no MFU (pass --peak-tflops)"
    return peak, f"the price catalog's `{catalog_model(listed[0], catalog)}`, for {listed[0]}"


def stamp_command(argv: list[str]) -> str:
    """The command for the BENCHMARKS.md stamp: where the files went left out."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--benchmarks", "--workdir"):
            skip = True
        elif not arg.startswith(("--out=", "--benchmarks=", "--workdir=")):
            kept.append(arg)
    return shlex.join(["python", "scripts/bench_gpu.py", *kept])


def machine() -> str:
    """This machine for the stamp: the GPU as nvidia-smi names it (no CUDA context), CPU, torch."""
    import torch

    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        gpus = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        gpus = []
    gpu = "unknown GPU"
    if gpus:
        name, memory, driver = (part.strip() for part in gpus[0].split(","))
        gpu = f"{len(gpus)} x {name} ({memory}, driver {driver})"
    cpu = cpu_model()
    return (
        f"{gpu}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    )


class MemorySampler:
    """nvidia-smi's `summary.NVSMI_FIELDS` of the first visible GPU every 0.5 s into a CSV file,
    while the context is open (nothing where nvidia-smi is missing)."""

    def __init__(self, path: Path):
        self.path = path
        self.process: subprocess.Popen | None = None
        self.gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]

    def __enter__(self) -> MemorySampler:
        binary = shutil.which("nvidia-smi")
        if binary is None:
            return self
        query = [f"--query-gpu={','.join(summary.NVSMI_FIELDS)}", "--format=csv,noheader,nounits"]
        with open(self.path, "w") as sink:
            self.process = subprocess.Popen(
                [binary, "-i", self.gpu, *query, "-lms", str(NVSMI_INTERVAL_MS)], stdout=sink
            )
        return self

    def __exit__(self, *_exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def peak_mib(self) -> int | None:
        return summary.peak_memory_mib(self.path.read_text()) if self.path.exists() else None


@dataclass
class Bench:
    """One `make bench-gpu`: the time budget, the output folder and its log, what has been measured."""

    out: Path
    work: Path
    benchmarks: Path
    budget_s: float
    command: str
    started: float = field(default_factory=time.monotonic)
    result: dict[str, Any] = field(default_factory=lambda: {"stages": {}, "runs": []})
    log: TextIO | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def say(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            if self.log:
                self.log.write(line + "\n")
                self.log.flush()

    def stage(self, title: str) -> None:
        self.say(f"\n=== [{time.monotonic() - self.started:.0f} s, {self.left():.0f} s left] {title}")

    def run(self, argv: list[str], limit: float, env: dict[str, str] | None = None) -> str:
        """Run `argv` from the repository root, its output into the log as it comes; stopped
        (its whole process tree) after `limit` seconds. "ok", "exit N" or "timed out after N s"."""
        self.say("$ " + shlex.join(argv))
        began = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        reader = threading.Thread(target=self._copy_lines, args=(process.stdout,), daemon=True)
        reader.start()
        try:
            code = process.wait(timeout=max(1.0, limit))
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            stop_tree(process.pid)
            status = f"timed out after {limit:.0f} s"
        reader.join(timeout=5)  # an orphaned grandchild may still hold the pipe: not waited for
        self.say(f"--> {status} in {time.monotonic() - began:.0f} s")
        return status

    def _copy_lines(self, stream) -> None:
        for line in stream:
            self.say(line.rstrip("\n"))

    def save(self) -> None:
        """results.json, and BENCHMARKS.md (in place and a copy in `out`) once something is measured."""
        result = self.result
        (self.out / "results.json").write_text(json.dumps(result, indent=2, default=str))
        if not (any(run.get("summary") for run in result["runs"]) or result.get("sdpa") or result.get("profile")):
            return
        date = datetime.now(UTC).strftime("%Y-%m-%d")
        measured = summary.sections(result, date=date, machine=result["machine"], command=self.command)
        existing = self.benchmarks.read_text() if self.benchmarks.exists() else ""
        self.benchmarks.write_text(merge(existing, measured))
        shutil.copyfile(self.benchmarks, self.out / "BENCHMARKS.md")


def stop_tree(pid: int) -> None:
    """SIGTERM to a process and every descendant (torchrun's workers run in sessions of their
    own), SIGKILL to those left `STOP_WAIT_S` later."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=STOP_WAIT_S)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def read_json(path: Path) -> Any:
    """What a stage's helper wrote, or None (it never got there, or was stopped mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_environment(bench: Bench, peak_override: float | None) -> None:
    bench.stage("environment")
    report = bench.out / "environment.json"
    status = bench.run([sys.executable, str(HELPERS / "environment.py"), str(report)], min(120, bench.left()))
    bench.result["stages"]["environment"] = status
    bench.result["environment"] = read_json(report)
    if peak_override:
        bench.result["peak_tflops"], bench.result["peak_source"] = peak_override, "given with --peak-tflops"
    else:
        bench.result["peak_tflops"], bench.result["peak_source"] = catalog_peak()
    bench.say(f"peak TFLOP/s for the MFU: {bench.result['peak_tflops']} ({bench.result['peak_source']})")


def stage_sdpa(bench: Bench) -> None:
    bench.stage("SDPA kernel probe")
    probe = bench.out / "sdpa_probe.json"
    status = bench.run([sys.executable, str(HELPERS / "sdpa_probe.py"), str(probe)], min(120, bench.left()))
    bench.result["stages"]["sdpa"] = status
    bench.result["sdpa"] = read_json(probe)


def stage_data(bench: Bench, posts: list[str], comments: list[str]) -> None:
    bench.stage(f"data: {' '.join(Path(p).name for p in posts)}")
    for dataset in DATASETS.values():
        if bench.left() < DATA_NEEDS_S:
            bench.result["stages"][f"data {dataset.id}"] = f"skipped: {bench.left():.0f} s left of {DATA_NEEDS_S}"
            continue
        argv = [
            sys.executable,
            "-m",
            "sobertctl.main",
            "data",
            "prepare",
            "--posts",
            *posts,
            *(["--comments", *comments] if comments else []),
            "--out",
            str(bench.work / "store"),
            "--vocab-size",
            str(dataset.vocab_size),
            "--workers",
            str(min(8, os.cpu_count() or 1)),
            "--dataset-id",
            dataset.id,
        ]
        bench.result["stages"][f"data {dataset.id}"] = bench.run(argv, min(180, bench.left()))


def stage_pretrain(bench: Bench, run: PresetRun, posts: list[str]) -> dict:
    """One preset's run, its progress records copied to `out` and summarised, its checkpoints deleted."""
    from sobert_api import paths
    from sobert_operator.render.pretrain import PRETRAIN_PROCESS_ENV

    bench.stage(f"{run.preset}: {run.overrides}")
    row: dict[str, Any] = {"name": run.name, "preset": run.preset, "overrides": run.overrides}
    store, scratch = bench.work / "store", bench.work / f"scratch-{run.preset}"
    if bench.result["stages"].get(f"data {DATASETS[run.dataset].id}") != "ok":
        row["status"] = "skipped: no dataset"
    elif bench.left() < run.needs_s:
        row["status"] = f"skipped: {bench.left():.0f} s left of {run.needs_s}"
    if "status" in row:
        bench.say(row["status"])
        return row
    spec = run_spec(run, store, posts)
    row["shape"] = shape_of(spec)
    spec_path = bench.work / f"{run.name}.spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2))
    for stale in (store / paths.run_prefix(run.name), scratch):  # a run left by an earlier call would resume
        shutil.rmtree(stale, ignore_errors=True)
    command = launch_command(run, spec, spec_path, scratch, bench.result.get("peak_tflops"))
    began = time.monotonic()
    with MemorySampler(bench.out / f"nvsmi_{run.preset}.csv") as sampler:
        row["status"] = bench.run(command, min(run.needs_s, bench.left()), env=PRETRAIN_PROCESS_ENV)
    row["seconds"] = round(time.monotonic() - began, 1)
    row["peak_memory_mib"] = sampler.peak_mib()
    records = _progress_text(store / paths.progress_key(run.name), scratch / "progress.jsonl")
    (bench.out / f"progress_{run.preset}.jsonl").write_text(records)
    row["summary"] = summary.summarize_run(summary.read_records(records))
    shutil.rmtree(store / paths.checkpoints_prefix(run.name), ignore_errors=True)  # large: ~11 GB a save
    shutil.rmtree(scratch / "checkpoints", ignore_errors=True)
    return row


def _progress_text(published: Path, local: Path) -> str:
    """The run's progress.jsonl: rank 0's local file (current to the last step, even after a kill),
    else the published copy."""
    for path in (local, published):
        if path.exists():
            return path.read_text()
    return ""


def stage_profile(bench: Bench) -> None:
    from sobert_operator.render.pretrain import PRETRAIN_PROCESS_ENV

    bench.stage("profile of the base step")
    if bench.left() < PROFILE_NEEDS_S:
        bench.result["stages"]["profile"] = f"skipped: {bench.left():.0f} s left of {PROFILE_NEEDS_S}"
        bench.say(bench.result["stages"]["profile"])
        return
    figures = bench.out / "profile_base.json"
    peak = bench.result.get("peak_tflops")
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=1",
        str(HELPERS / "profile_step.py"),
        *PROFILE_ARGS,
        "--json",
        str(figures),
        *(["--peak-tflops", str(peak)] if peak else []),
    ]
    bench.result["stages"]["profile"] = bench.run(argv, bench.left() - 10, env=PRETRAIN_PROCESS_ENV)
    bench.result["profile"] = read_json(figures)


def measure(bench: Bench, args: argparse.Namespace) -> None:
    """Every stage in order, the results saved after each."""
    posts, comments = (args.posts, args.comments or []) if args.posts else default_posts()
    bench.result["posts"] = [Path(p).name for p in posts]
    bench.result["machine"] = machine()
    bench.say(f"machine: {bench.result['machine']}")
    stage_environment(bench, args.peak_tflops)
    bench.save()
    stage_sdpa(bench)
    bench.save()
    stage_data(bench, posts, comments)
    bench.save()
    for run in RUNS:
        bench.result["runs"].append(stage_pretrain(bench, run, posts))
        bench.save()
    stage_profile(bench)
    bench.save()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-gpu", help="Where every result goes.")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="The file the sections go to.")
    parser.add_argument("--budget-s", type=float, default=540, help="Seconds for every stage together.")
    parser.add_argument("--posts", nargs="+", help="Posts.xml files (default: ../shared's sample, else the fixture).")
    parser.add_argument("--comments", nargs="*", help="Comments.xml files matching --posts.")
    parser.add_argument("--peak-tflops", type=float, help="The GPU's dense BF16 peak (default: the price catalog's).")
    parser.add_argument("--workdir", type=Path, help="Datasets and runs (default: a temporary folder, removed after).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    reason = no_cuda_reason()
    if reason:
        print(reason)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sobert-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.out, work, args.benchmarks.resolve(), args.budget_s, stamp_command(argv))
    with open(args.out / "log.txt", "w") as bench.log:
        try:
            measure(bench, args)
        finally:
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
        bench.stage("what the log says about fallbacks, recompilations and errors (count, line)")
        for line, count in summary.notable_lines((args.out / "log.txt").read_text()):
            bench.say(f"{count:5d}  {line[:200]}")
        bench.stage("summary")
        for line in (*summary.render_pretrain(bench.result), "", *summary.render_kernels(bench.result)):
            bench.say(line)
    failed = {k: v for k, v in bench.result["stages"].items() if not v.startswith(("ok", "skipped"))}
    failed |= {
        run["name"]: run["status"] for run in bench.result["runs"] if run["status"].startswith(("exit", "timed"))
    }
    print(f"results in {args.out}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
