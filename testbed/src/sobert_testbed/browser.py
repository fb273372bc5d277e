"""A real browser for the tests of what people read: Debian's headless Chromium, installed by
testbed/scripts/install-chromium.sh (apt-get, as root or through sudo)."""

from __future__ import annotations

import subprocess

from sobert_testbed import SCRIPTS, MissingPrerequisiteError


def chromium() -> str:
    """The chromium binary's path, installed first if it is not there."""
    result = subprocess.run(["bash", str(SCRIPTS / "install-chromium.sh")], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        why = result.stderr[-2000:]
        raise MissingPrerequisiteError(f"chromium is not installable here (apt-get needs root): {why}")
    return result.stdout.strip().splitlines()[-1]
