"""`python -m sobert_trainer.torchrun [--grace-seconds=N] <torchrun flags> -m MODULE ARGS`.

torchrun itself (`torch.distributed.run.run`: the same flags, the same `PET_*` defaults, the same
static rendezvous from `PET_MASTER_ADDR`/`PET_MASTER_PORT`/`PET_NODE_RANK`), with the exit code an
orchestrator can act on. Plain torchrun exits 1 for everything that goes wrong
(`SignalException` when it is sent SIGTERM, `ChildFailedError` when a worker dies), and the
Kubeflow Training Operator's `restartPolicy: ExitCode` treats 1-127 as permanent
(`IsRetryableExitCode`, training-operator v1.9.0 pkg/util/train/train_util.go). Here:

- SIGTERM (preemption, a drained node, a budget suspend) to this process: the workers get SIGTERM,
  checkpoint and exit, and this process exits 128 + 15 = 143, which is retried;
- otherwise the first worker to fail decides (`exit_code_for`): killed by a signal (the OOM
  killer's SIGKILL, say), 128 + that signal; its own code otherwise (2 for bad input, 1 for a
  crash: permanent; 143 when it checkpointed after its own SIGTERM).

`--grace-seconds` is the pod's `terminationGracePeriodSeconds`: the workers get that long, less
SHUTDOWN_MARGIN_S for this process to exit, between SIGTERM and torchrun's SIGKILL (torchrun's own
default is 30 s whatever the pod allows, too short for a large checkpoint and its upload).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

from sobert_api.stages import GRACE_FLAG

# What this process needs after its workers are gone, before the kubelet's SIGKILL at the grace period.
SHUTDOWN_MARGIN_S = 10


def worker_shutdown_timeout(grace_seconds: int) -> int:
    """Seconds torchrun waits for its workers after forwarding SIGTERM, before SIGKILL."""
    return max(1, grace_seconds - SHUTDOWN_MARGIN_S)


def exit_code_for(failures: Iterable[tuple[float, int]]) -> int:
    """The launcher's exit code for failed workers, given (time, exit code) per failed worker
    (a negative code: killed by that signal).

    The earliest failures are the cause; the others are usually torchrun stopping the rest (they
    exit 143 after checkpointing, or are SIGKILLed at the end of the grace period). Among failures
    of the same second: a kill by a signal other than SIGTERM (the OOM killer's SIGKILL) first,
    then a worker's own error (1-127), then 128+, then a kill by SIGTERM (torchrun's own stop of
    the other workers, when it lands before a worker's handler is in place or after it is gone).
    """
    failed = [(when, code) for when, code in failures if code != 0]
    if not failed:
        return 0
    first = min(when for when, _ in failed)
    codes = [code for when, code in failed if when == first]
    killed = [-code for code in codes if code < 0 and -code != signal.SIGTERM]
    if killed:
        return 128 + killed[0]
    own = [code for code in codes if 0 < code < 128]
    exited = [code for code in codes if code > 0]
    return own[0] if own else exited[0] if exited else 128 + signal.SIGTERM


def split_grace(argv: list[str]) -> tuple[int | None, list[str]]:
    """`--grace-seconds=N` when it leads the arguments (everything after belongs to torchrun)."""
    if argv and argv[0].startswith(GRACE_FLAG):
        value = argv[0][len(GRACE_FLAG) :]
        if not value.isdigit():
            raise SystemExit(f"error: {GRACE_FLAG}{value}: expected a whole number of seconds")
        return int(value), argv[1:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    # Before torch installs its handlers: a SIGTERM during start-up still ends in a retryable exit
    # (and PID 1 in a container ignores signals it has no handler for).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    grace, torchrun_argv = split_grace(list(sys.argv[1:] if argv is None else argv))
    if grace is not None:
        # Read by torch's LaunchConfig when --shutdown-timeout is not given (torch/distributed/launcher/api.py).
        os.environ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(worker_shutdown_timeout(grace))

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun.run(torchrun.parse_args(torchrun_argv))
    except SignalException as exc:
        code = 128 + int(exc.sigval)
        print(f"torchrun: {exc.sigval.name} received; workers stopped; exit {code}", file=sys.stderr, flush=True)
        return code
    except ChildFailedError as exc:
        failures = [(failure.timestamp, failure.exitcode) for failure in exc.failures.values()]
        code = exit_code_for(failures)
        print(f"torchrun: worker exit codes {[c for _, c in failures]}; exit {code}", file=sys.stderr, flush=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
