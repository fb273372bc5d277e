"""The price catalog: GPU models (peak FLOP/s, memory, expected MFU) and $/hour with provenance.

One YAML document (`prices.yaml` beside this file is the default; users pass their own). Every
price carries where it came from and when, and reports repeat that, so a forecast is never a
number without a source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sobert_api.loading import SpecError, format_validation_error

DEFAULT_CATALOG = Path(__file__).with_name("prices.yaml")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GpuModel(_Doc):
    peak_tflops: Annotated[float, Field(gt=0, alias="peakTflops", description="Dense BF16 peak, TFLOP/s.")]
    memory_gib: Annotated[float, Field(gt=0, alias="memoryGib")]
    expected_mfu: Annotated[float, Field(gt=0, le=1, alias="expectedMfu", description="Before calibration.")]
    source: str


class Price(_Doc):
    gpu: str
    kind: Literal["on_demand", "spot"] = "on_demand"
    usd_per_gpu_hour: Annotated[float, Field(gt=0, alias="usdPerGpuHour")]
    provider: str
    source: str
    date: str


class CpuPrice(_Doc):
    usd_per_core_hour: Annotated[float, Field(gt=0, alias="usdPerCoreHour")]
    peak_gflops_per_core: Annotated[float, Field(gt=0, alias="peakGflopsPerCore")] = 64
    expected_mfu: Annotated[float, Field(gt=0, le=1, alias="expectedMfu")] = 0.05
    source: str
    date: str


class PriceCatalog(_Doc):
    gpus: dict[str, GpuModel]
    prices: list[Price]
    cpu: CpuPrice

    def gpu(self, name: str) -> GpuModel:
        try:
            return self.gpus[name.lower()]
        except KeyError:
            raise SpecError(f"unknown GPU {name!r}; the catalog knows {', '.join(sorted(self.gpus))}") from None

    def price(self, gpu: str, kind: str = "on_demand", provider: str | None = None) -> Price:
        """The cheapest listed price for the GPU and kind (or the given provider's)."""
        self.gpu(gpu)
        found = [p for p in self.prices if p.gpu == gpu.lower() and p.kind == kind and provider in (None, p.provider)]
        if not found:
            raise SpecError(f"no {kind} price for GPU {gpu!r}{f' from {provider}' if provider else ''} in the catalog")
        return min(found, key=lambda p: p.usd_per_gpu_hour)


def load_catalog(path: str | Path | None = None) -> PriceCatalog:
    source = Path(path) if path else DEFAULT_CATALOG
    try:
        document = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{source}: cannot read the price catalog: {exc}") from None
    try:
        return PriceCatalog.model_validate(document)
    except ValidationError as exc:
        raise SpecError(format_validation_error(str(source), exc, what="price catalog")) from None
