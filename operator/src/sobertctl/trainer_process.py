"""Running a trainer stage from the CLI: `sobertctl data prepare` and `sobertctl eval` start the
trainer's entry points as processes (`sobert_api.stages`), as the executors do, and never import
the trainer. Its package need not be installed where only the controller's commands are used."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sobert_api.spec import RunSpec
from sobert_operator.launch import require_trainer


@contextmanager
def spec_file(spec: RunSpec) -> Iterator[str]:
    """The spec as a spec.json the stage reads, for as long as the stage runs."""
    with tempfile.TemporaryDirectory(prefix="sobertctl-") as tmp:
        path = Path(tmp, "spec.json")
        path.write_text(spec.model_dump_json(indent=2))
        yield str(path)


def run_stage(command: str, args: list[str]) -> None:
    """Run `python <args>` in this Python with the terminal's stdout and stderr; a RuntimeError
    naming `command` and the exit code when it fails (the stage printed why)."""
    require_trainer(command)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = subprocess.run([sys.executable, *args], env=env, check=False).returncode
    if code != 0:
        raise RuntimeError(f"{command}: the trainer stage exited {code} (its message is above)")
