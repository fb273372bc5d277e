"""The embedded backend's allocations and budget enforcement, on the run's meter (`cost/meter.py`).

Each stage process is an allocation: its CPU cores x wall time x the catalog's core-hour price
(the same formula the controller applies to pods), appended to the run's ledger when it ends.
While a process runs, timers fire at the budget's thresholds at the current burn rate: a warning
line, a checkpoint request (pretraining saves and goes on: the same request object in storage the
controller writes on a cluster), and at the limit SIGTERM (it checkpoints and exits), after which
the run is budget-stopped until the budget is raised.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sobert_operator.cost.devices import local_stage_cores
from sobert_operator.cost.ledger import Allocation
from sobert_operator.cost.meter import RunMeter
from sobert_operator.cost.policy import BudgetAction, budget_action, threshold_seconds
from sobert_operator.cost.records import request_checkpoint


class BudgetStoppedError(RuntimeError):
    """The run's spend reached its budget; it stopped after checkpointing."""


@dataclass
class Metered:
    phase: str
    cores: float
    start: float
    timers: list[threading.Timer] = field(default_factory=list)
    stopped_by_budget: bool = False


class LocalMeter:
    """The stage processes of one run on this machine, on its meter (`run`)."""

    def __init__(self, run: RunMeter, emit: Callable[[str], None]):
        self.run, self.spec, self.storage, self.emit = run, run.spec, run.storage, emit
        self.usd_per_core_hour = run.catalog.cpu.usd_per_core_hour

    def spent(self) -> float:
        return self.run.spend().usd

    def check(self) -> None:
        """Before a stage: refuse to start one once the budget is spent."""
        spent = self.spent()
        if budget_action(spent, self.spec.budget) is BudgetAction.stop:
            raise BudgetStoppedError(
                f"run {self.spec.name} is budget-stopped: spent ${spent:.6f} of ${self.spec.budget.usd}; "
                "submit again with a higher --budget to resume"
            )

    def start(self, phase: str, pid: int | None = None) -> Metered:
        """Begin metering a stage; with a process group id, arm the budget's threshold timers."""
        metered = Metered(phase, local_stage_cores(self.spec, phase), time.time())
        if pid is None:
            return metered
        burn = metered.cores * self.usd_per_core_hour
        for action, seconds in threshold_seconds(self.spent(), self.spec.budget, burn).items():
            timer = threading.Timer(seconds, self._fire, (action, metered, pid))
            timer.daemon = True
            timer.start()
            metered.timers.append(timer)
        return metered

    def _fire(self, action: BudgetAction, metered: Metered, pid: int) -> None:
        share = {
            BudgetAction.warn: self.spec.budget.warn_fraction,
            BudgetAction.checkpoint: self.spec.budget.checkpoint_fraction,
        }
        if action is BudgetAction.warn:
            self.emit(f"    budget: {share[action]:.0%} of ${self.spec.budget.usd} spent")
        elif action is BudgetAction.checkpoint and metered.phase == "pretrain":
            self.emit(f"    budget: {share[action]:.0%} spent; asking pretrain to checkpoint now")
            request_checkpoint(self.storage, self.spec.name, f"budget {share[action]:.0%} spent")
        elif action is BudgetAction.stop:
            self.emit(f"    budget: ${self.spec.budget.usd} spent; stopping {metered.phase} after a checkpoint")
            metered.stopped_by_budget = True
            os.killpg(pid, signal.SIGTERM)

    def finish(self, metered: Metered, reason: str) -> Allocation:
        """Stop the timers and append the stage's allocation to the ledger."""
        for timer in metered.timers:
            timer.cancel()
        allocation = Allocation(
            name=f"{self.spec.name}-{metered.phase.replace('/', '-')}",
            phase=metered.phase,
            device="cpu",
            devices=metered.cores,
            usd_per_hour=self.usd_per_core_hour,
            start=metered.start,
            end=time.time(),
            reason="BudgetStopped" if metered.stopped_by_budget else reason,
        )
        self.run.record(allocation)
        return allocation
