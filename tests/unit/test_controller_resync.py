"""The resync interval is read when kopf loads the controller's registrations, not when some
other module first imports the handlers. (Seen in CI: a unit test imported the handlers at
collection, the interval froze at the default 60 s, and the integration tests that set
SOBERT_RESYNC_SECONDS=2 timed out waiting for resyncs.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import os
    import sobert_operator.controller.handlers  # as test collection or another module may
    os.environ["SOBERT_RESYNC_SECONDS"] = "2"
    import sobert_operator.controller.main  # what `kopf run -m` does
    from kopf._core.intents.registries import get_default_registry
    print([(h.id, h.interval, h.idle) for h in get_default_registry()._spawning.get_all_handlers()])
    """
)


def test_the_resync_timer_follows_the_environment_at_registration():
    # A fresh interpreter: in this one the registrations may already have been made.
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[('resync_run', 2.0, 2.0)]"
