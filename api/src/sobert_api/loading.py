"""Building RunSpecs from YAML files, presets and CLI overrides, with errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sobert_api.presets import deep_merge, preset_document
from sobert_api.spec import RunSpec


class SpecError(ValueError):
    """A spec that cannot be valid; the message names the source and every offending field."""


def format_validation_error(source: str, error: ValidationError, what: str = "run spec") -> str:
    lines = [f"{source}: invalid {what}"]
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(spec)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def build_spec(document: dict[str, Any], source: str = "spec") -> RunSpec:
    """Validate a spec document, expanding `preset:` under the document's own values."""
    preset = document.get("preset")
    if preset is not None:
        try:
            document = deep_merge(preset_document(str(preset)), document)
        except KeyError as exc:
            raise SpecError(f"{source}: preset: {exc.args[0]}") from None
    try:
        return RunSpec.model_validate(document)
    except ValidationError as exc:
        raise SpecError(format_validation_error(source, exc)) from None


def load_spec_file(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Read a YAML RunSpec; `overrides` (from CLI flags) win over the file."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(document).__name__}")
    return build_spec(deep_merge(document, overrides or {}), source=str(path))
