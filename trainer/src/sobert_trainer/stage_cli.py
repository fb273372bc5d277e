"""What every `python -m sobert_trainer.<stage>` entry point does first: log lines, read its spec."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

from sobert_api.loading import SpecError, build_spec
from sobert_api.spec import RunSpec

# Stage exit codes. 1-127 are permanent for the Training Operator's `restartPolicy: ExitCode`, 128+ retried.
EXIT_BAD_INPUT = 2
# "Checkpointed on SIGTERM, restart me": 128 + SIGTERM, what a process killed by SIGTERM reports.
EXIT_PREEMPTED = 128 + signal.SIGTERM


def start_stage(spec_path: Path) -> RunSpec | None:
    """Configure logging and load the run's spec.json; None after printing why (exit EXIT_BAD_INPUT)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return build_spec(json.loads(spec_path.read_text()), source=str(spec_path))
    except (OSError, ValueError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
