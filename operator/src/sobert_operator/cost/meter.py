"""One run's meter: its ledger, its forecast and its ETA history in storage, kept the same way by
both executors.

What differs between the executors is how they see an allocation start and end: the local
executor times its stage processes (`local_meter.py`), the controller reads the run's pods
(`kube/budget.py`). From there on it is this meter's: the ledger of ended allocations in
`runs/<run>/cost/ledger.jsonl`, what has been spent and what is burning now, the forecast re-made
from what the run measured (`forecast.json`; the one the run was admitted on, once, in
`forecast-submit.json`), and the progress and ETA estimates the report plots (`eta.jsonl`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sobert_api import paths
from sobert_api.dataset import dataset_id
from sobert_api.progress import read_progress
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_operator.cluster import ClusterConfig
from sobert_operator.cost.catalog import PriceCatalog
from sobert_operator.cost.devices import forecast_for
from sobert_operator.cost.forecast import Forecast, Measured
from sobert_operator.cost.ledger import Allocation, summarize
from sobert_operator.cost.measured import read_measured
from sobert_operator.cost.records import append_allocation, append_eta, read_ledger


@dataclass
class MeterMemory:
    """What a meter keeps between calls within one executor process. None of it is needed after
    a restart: storage has it all; it saves reads."""

    measured: tuple[str | None, Measured] | None = None  # what the run measured, read at this stage
    forecast: dict[str, Any] | None = None  # the last forecast made (as forecast.json holds it)
    eta: tuple[str | None, float, dict[str, Any]] | None = None  # the last ETA line: stage, time, figures


@dataclass(frozen=True)
class Spend:
    usd: float  # the ledger, running allocations priced to now
    burn_usd_per_hour: float  # what the running allocations cost per hour
    ledger: list[Allocation] = field(default_factory=list)


class RunMeter:
    def __init__(
        self,
        spec: RunSpec,
        storage: Storage,
        catalog: PriceCatalog,
        cluster: ClusterConfig | None = None,
        memory: MeterMemory | None = None,
    ):
        """`cluster`: the cluster's configuration (its node pools' devices and prices); None for
        this machine's CPU cores. `memory`: what an earlier meter of this run in this process kept."""
        self.spec, self.storage, self.catalog, self.cluster = spec, storage, catalog, cluster
        self.memory = memory if memory is not None else MeterMemory()

    # -- the ledger ---------------------------------------------------------------------------
    def ledger(self) -> list[Allocation]:
        return read_ledger(self.storage, self.spec.name)

    def record(self, allocation: Allocation) -> None:
        """Append one ended allocation to the ledger."""
        append_allocation(self.storage, self.spec.name, allocation)

    def spend(self, seen: Iterable[Allocation] = (), now: float | None = None) -> Spend:
        """The spend with what the executor sees now (`seen`: allocations running or ended, by
        name). Those that ended and are not on the ledger yet are appended, once; the ledger wins
        for the others (pods go away, the money they cost stays)."""
        now = time.time() if now is None else now
        stored = self.ledger()
        known = {a.name for a in stored}
        seen = [a for a in seen if a.name not in known]
        for allocation in seen:
            if allocation.end is not None:
                self.record(allocation)
        ledger = [*stored, *seen]
        burn = sum(a.devices * a.usd_per_hour for a in ledger if a.end is None)
        return Spend(summarize(ledger, now)["usd"], burn, ledger)

    # -- the forecast -------------------------------------------------------------------------
    def admitted(self, make: Callable[[], Forecast] | None = None) -> None:
        """Keep the forecast the run is admitted on, the first time only (`forecast-submit.json`):
        the one `make` makes, else the one made before the run has measured anything."""
        key = paths.submit_forecast_key(self.spec.name)
        if not self.storage.exists(key):
            forecast = make() if make else forecast_for(self.spec, self.catalog, self.cluster)
            self.storage.write_json(key, forecast.as_dict())

    def reforecast(self, stage: str | None) -> Forecast:
        """The forecast re-made from the run's progress and from what it measured (read once per
        `stage`: it changes only as stages end), written to `forecast.json` and remembered."""
        cached = self.memory.measured
        if cached is None or cached[0] != stage:
            cached = self.memory.measured = (stage, read_measured(self.spec, self.storage, dataset_id(self.spec)))
        forecast = forecast_for(
            self.spec,
            self.catalog,
            self.cluster,
            progress=read_progress(self.storage, self.spec.name),
            measured=cached[1],
        )
        self.memory.forecast = forecast.as_dict()
        self.storage.write_json(paths.forecast_key(self.spec.name), self.memory.forecast)
        return forecast

    def last_forecast(self) -> dict[str, Any] | None:
        """The forecast this meter last made, else the one in storage (after a restart)."""
        if self.memory.forecast is None:
            self.memory.forecast = self.storage.read_json_if_exists(paths.forecast_key(self.spec.name))
        return self.memory.forecast

    # -- the ETA history ----------------------------------------------------------------------
    def record_eta(self, figures: dict[str, Any], now: float, every_seconds: float) -> bool:
        """Append an estimate (`eta.estimate`'s figures) to the history the report plots when it
        says something new: its figures (but their time) changed, and the stage changed or
        `every_seconds` have passed since the last line (each line rewrites the object on S3).
        True when it was appended."""
        stage = (figures.get("stage") or {}).get("name")
        unchanged = {k: v for k, v in figures.items() if k != "lastUpdatedTime"}
        last = self.memory.eta
        if last is not None and (unchanged == last[2] or (stage == last[0] and now - last[1] < every_seconds)):
            return False
        append_eta(self.storage, self.spec.name, figures, now)
        self.memory.eta = (stage, now, unchanged)
        return True
