"""Typed run specifications shared by the CLI, the controller and the trainer."""

from sobert_api.loading import SpecError, build_spec, load_spec_file
from sobert_api.presets import preset_names
from sobert_api.spec import DataSpec, DocumentUnit, ModelSpec, ParallelSpec, Precision, RunSpec, StorageSpec, TrainSpec

__all__ = [
    "DataSpec",
    "DocumentUnit",
    "ModelSpec",
    "ParallelSpec",
    "Precision",
    "RunSpec",
    "SpecError",
    "StorageSpec",
    "TrainSpec",
    "build_spec",
    "load_spec_file",
    "preset_names",
]
