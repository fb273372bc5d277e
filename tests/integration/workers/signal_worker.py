"""A torchrun worker for the launcher tests: --mode term (on SIGTERM, "checkpoint" for
--save-seconds, write a marker and exit 143), exit:N, or kill:SIG (the kernel's kill, as the OOM
killer does)."""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--mode", required=True)
parser.add_argument("--save-seconds", type=float, default=0.0)
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()
rank = int(os.environ["RANK"])


def on_term(_signum, _frame):
    time.sleep(args.save_seconds)
    (args.out / f"saved-{rank}").write_text("ok")
    sys.exit(143)


signal.signal(signal.SIGTERM, on_term)
(args.out / f"started-{rank}").write_text(str(os.getpid()))
if args.mode.startswith("exit:") and rank == 1:
    sys.exit(int(args.mode.split(":")[1]))
if args.mode.startswith("kill:") and rank == 1:
    os.kill(os.getpid(), getattr(signal, args.mode.split(":")[1]))
while True:
    time.sleep(0.1)
