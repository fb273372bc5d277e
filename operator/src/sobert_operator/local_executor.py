"""The embedded executor: walks the pipeline on this machine (torchrun on CPU or local GPUs).

Each stage's completion is read back from storage, so re-running the same submit resumes
where the run stopped: a published dataset is reused, pretraining resumes from the newest
complete checkpoint, conversion reruns only when a newer checkpoint exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sobert_api import paths
from sobert_api.dataset import dataset_id
from sobert_api.progress import loss_curves, read_progress
from sobert_api.spec import RunSpec
from sobert_api.stages import EXIT_PREEMPTED, HEADLINE_PREFIXES, PREEMPTED_LINE, STEP_LINE, TRAINER_INFO_LINE
from sobert_api.storage import Storage
from sobert_operator.cost.catalog import load_catalog
from sobert_operator.cost.forecast import Forecast
from sobert_operator.cost.local_gpus import local_peak_tflops
from sobert_operator.cost.meter import RunMeter
from sobert_operator.eta import PhaseState, estimate
from sobert_operator.launch import (
    LOCAL_GRACE_SECONDS,
    LaunchTarget,
    convert_command,
    finetune_command,
    prepare_command,
    pretrain_command,
    require_trainer,
)
from sobert_operator.local_meter import BudgetStoppedError, LocalMeter
from sobert_operator.pipeline import STAGE_ORDER, Observed, Stage, next_stage
from sobert_operator.published import observe
from sobert_operator.report import write_report
from sobert_operator.results import finetune_results
from sobert_operator.run_record import record_spec


class StageFailedError(RuntimeError):
    def __init__(self, stage: Stage, code: int, hint: str = ""):
        super().__init__(f"stage {stage.value} failed with exit code {code}{hint}")
        self.stage, self.code = stage, code


class TasksFailedError(StageFailedError):
    """Some finetune tasks failed after every task ran; the others' results are published."""

    def __init__(self, failed: dict[str, int], tasks: int, logs: dict[str, str]):
        listed = ", ".join(f"{task} (exit {code}; driver log {logs[task]})" for task, code in failed.items())
        RuntimeError.__init__(
            self, f"stage finetune: {len(failed)} of {tasks} tasks failed: {listed}; the others' results are published"
        )
        self.stage, self.code, self.failed = Stage.finetune, max(failed.values()), failed


@dataclass
class RunSummary:
    run: str
    storage: str
    dataset_id: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    observed: Observed = field(default_factory=Observed)
    finetune: dict[str, dict] = field(default_factory=dict)  # task -> headline of its metrics.json
    spent_usd: float = 0.0
    validation_lm_loss: float | None = None  # pretraining's last, on the held-out posts

    def as_dict(self) -> dict:
        return {
            "run": self.run,
            "storage": self.storage,
            "dataset_id": self.dataset_id,
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
            "checkpoint_step": self.observed.checkpoint_step,
            "hf_step": self.observed.hf_step,
            "finetuned": sorted(self.observed.finetuned),
            "artifacts": {
                "dataset": f"{self.storage}/{paths.dataset_prefix(self.dataset_id)}",
                "checkpoints": f"{self.storage}/{paths.checkpoints_prefix(self.run)}",
                "progress": f"{self.storage}/{paths.progress_key(self.run)}",
                "hf_model": f"{self.storage}/{paths.hf_prefix(self.run)}",
                "report": f"{self.storage}/{paths.cost_prefix(self.run)}/report.html",
                **{
                    f"finetune_{task}": f"{self.storage}/{paths.finetune_prefix(self.run, task)}"
                    for task in sorted(self.finetune)
                },
            },
            "finetune": self.finetune,
            "spent_usd": round(self.spent_usd, 6),
            "validation_lm_loss": self.validation_lm_loss,
        }


def local_phases(spec: RunSpec, observed: Observed, running: tuple[str, float] | None) -> list[PhaseState]:
    """The run's phases as this executor sees them: done where storage holds their output, the one
    it is running (with its start), the rest pending."""
    phases = []
    for stage in STAGE_ORDER:
        names = [f"finetune/{t.value}" for t in spec.finetune.tasks] if stage is Stage.finetune else [stage.value]
        for name in names:
            if observed.done(spec, stage, name.split("/", 1)[1] if "/" in name else None):
                phases.append(PhaseState(name, "done"))
            elif running and running[0] == name:
                phases.append(PhaseState(name, "running", running[1]))
            else:
                phases.append(PhaseState(name, "pending"))
    return phases


class LocalExecutor:
    def __init__(self, spec: RunSpec, workdir: Path, emit: Callable[[str], None] = print):
        self.spec = spec
        self.storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
        self.workdir = workdir / spec.name
        self.emit = emit
        self.dataset_id = dataset_id(spec)
        self.meter = LocalMeter(RunMeter(spec, self.storage, load_catalog()), emit)
        self.running: tuple[str, float] | None = None  # the phase running and when it started
        self.eta_recorded = 0.0

    ETA_EVERY_SECONDS = 5.0  # while a stage runs, at most one ETA record this often

    def record_eta(self, force: bool = True) -> None:
        """Estimate the run's progress and ETA now (`eta.py`) and add it to the history the report
        plots (`RunMeter.record_eta`): when it changed, as a stage begins or ends (`force`), else at
        most once every ETA_EVERY_SECONDS (on progress lines)."""
        now = time.time()
        if not force and now - self.eta_recorded < self.ETA_EVERY_SECONDS:
            return
        self.eta_recorded = now
        run = self.meter.run
        phases = local_phases(self.spec, self.observe(), self.running)
        records = read_progress(self.storage, self.spec.name)
        started = min([a.start for a in run.ledger()] + [self.running[1] if self.running else now])
        forecast = run.last_forecast() or self.forecast().as_dict()
        batch_tokens = self.spec.train.global_batch_size * self.spec.model.seq_length
        figures = estimate(phases, forecast, records[-1] if records else None, batch_tokens, started, now,
                           parallel_tasks=False)  # fmt: skip
        run.record_eta(figures, now, every_seconds=0.0 if force else self.ETA_EVERY_SECONDS)

    def run(self) -> RunSummary:
        """Run every stage whose output is missing, in order."""
        require_trainer(f"run {self.spec.name} (local backend)")
        record_spec(self.spec, self.storage)
        self.meter.run.admitted(self.forecast)
        summary = RunSummary(self.spec.name, self.storage.uri(), self.dataset_id)
        self.record_eta()
        while (stage := next_stage(self.spec, observed := self.observe())) is not None:
            started = time.monotonic()
            try:
                self.meter.check()
                self.run_stage(stage)
            except (BudgetStoppedError, TasksFailedError):
                write_report(self.spec, self.storage)
                raise
            finally:
                self.forecast(stage.value)
                self.running = None
                self.record_eta()
            summary.stage_seconds[stage.value] = (
                summary.stage_seconds.get(stage.value, 0.0) + time.monotonic() - started
            )
            if self.observe() == observed:
                raise StageFailedError(stage, 1, ": it exited 0 but published nothing")
        summary.observed = observed
        summary.finetune = finetune_results(self.spec, self.storage)
        summary.spent_usd = self.meter.spent()
        validation = loss_curves(read_progress(self.storage, self.spec.name))["validation"]
        summary.validation_lm_loss = validation[-1][1] if validation else None
        self.storage.write_json(paths.summary_key(self.spec.name), summary.as_dict())
        write_report(self.spec, self.storage)
        return summary

    def forecast(self, after: str | None = None) -> Forecast:
        """This machine's forecast (`RunMeter.reforecast`, written to forecast.json): every phase on
        CPU cores at the catalog's core-hour price, each from what the run has measured so far
        (`cost/measured.py`, read again after the stage `after`; pretraining from its throughput
        once progress.jsonl is past the calibration window)."""
        return self.meter.run.reforecast(after)

    def observe(self) -> Observed:
        return observe(self.spec, self.storage, self.dataset_id)

    def run_stage(self, stage: Stage, step: int | None = None) -> None:
        """Run one stage as a child process of the trainer (`sobert_api.stages`), metered."""
        require_trainer(f"stage {stage.value} of run {self.spec.name}")
        self.emit(f"==> {stage.value}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_file = self.workdir / "spec.json"
        spec_file.write_text(self.spec.model_dump_json(indent=2))
        if stage is Stage.prepare:
            self._subprocess(stage, prepare_command(str(spec_file), self.dataset_id, python=sys.executable))
            self._dataset_summary()
        elif stage is Stage.pretrain:
            scratch = str(self.workdir / "scratch")
            command = pretrain_command(
                self.spec,
                str(spec_file),
                self.dataset_id,
                scratch,
                target=LaunchTarget.local,
                grace_seconds=LOCAL_GRACE_SECONDS,
                python=sys.executable,
                peak_tflops=local_peak_tflops(self.meter.run.catalog),  # None on CPU: no MFU
            )
            self._subprocess(stage, command)
        elif stage is Stage.convert:
            self._subprocess(stage, convert_command(str(spec_file), self.dataset_id, sys.executable, step))
        else:
            self._finetune_each_task(spec_file)

    def _finetune_each_task(self, spec_file: Path) -> None:
        """Every task not done yet, one after the other: a failed task does not stop the others
        (`TasksFailedError` after the last), as a failed RayJob does not stop the run's others."""
        tasks = self.observe().missing_tasks(self.spec)
        failed: dict[str, int] = {}
        for task in tasks:
            self.emit(f"    task {task}")
            command = finetune_command(str(spec_file), task, python=sys.executable)
            try:
                self._subprocess(Stage.finetune, command, phase=f"finetune/{task}")
            except BudgetStoppedError:
                raise
            except StageFailedError as exc:
                failed[task] = exc.code
        if failed:
            logs = {task: self.storage.uri(paths.finetune_driver_log_key(self.spec.name, task)) for task in failed}
            raise TasksFailedError(failed, len(tasks), logs)

    def _started(self, phase: str) -> None:
        self.running = (phase, time.time())
        self.record_eta()

    def _dataset_summary(self) -> None:
        """The published dataset's counts, from its manifest."""
        manifest = self.storage.read_manifest(paths.dataset_prefix(self.dataset_id))
        if manifest is None:
            return
        counts = manifest["counts"]
        self.emit(
            f"    {counts['documents']:,} documents, {counts['tokens']:,} tokens, "
            f"{counts['posts']['bad_total']} bad post rows, vocab {manifest['tokenizer']['vocab_size']:,}"
        )

    def _subprocess(self, stage: Stage, command: list[str], phase: str | None = None) -> None:
        """Run a stage as a child process group, metered; forward SIGINT/SIGTERM so it can checkpoint."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        verbose = os.environ.get("SOBERT_VERBOSE") == "1"
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        tail: list[str] = []
        preempted = False
        metered = self.meter.start(phase or stage.value, process.pid)
        self._started(phase or stage.value)

        def forward(signum, _frame):
            self.emit(f"    {signal.Signals(signum).name}: asking {stage.value} to checkpoint and stop")
            os.killpg(process.pid, signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip()
                tail = [*tail, line][-40:]
                preempted = preempted or line.startswith(PREEMPTED_LINE)
                if verbose or line.startswith(HEADLINE_PREFIXES) or TRAINER_INFO_LINE.match(line):
                    self.emit("    " + TRAINER_INFO_LINE.sub("", line))
                if line.startswith(STEP_LINE):
                    self.record_eta(force=False)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            code = process.wait()  # also after an interrupt: the stage's time is metered either way
            self.meter.finish(metered, "Completed" if code == 0 else "Preempted" if preempted else "Failed")
        if metered.stopped_by_budget:
            raise BudgetStoppedError(
                f"run {self.spec.name} stopped at its budget of ${self.spec.budget.usd} after checkpointing; "
                "submit again with a higher --budget to resume"
            )
        if code == 0:
            return
        if preempted or code == EXIT_PREEMPTED:
            raise StageFailedError(stage, code, ": stopped after checkpointing; submit again to resume")
        self.emit("\n".join("    | " + line for line in tail))
        raise StageFailedError(stage, code)
