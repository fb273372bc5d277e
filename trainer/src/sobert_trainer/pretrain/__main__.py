"""`torchrun ... -m sobert_trainer.pretrain --spec spec.json --dataset-id ID --workdir DIR [--peak-tflops T]`."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from sobert_api.dataset import VocabularyMismatchError
from sobert_api.stages import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PEER_LOST
from sobert_trainer.stage_cli import report_error, start_stage


def build_parser() -> argparse.ArgumentParser:
    """This entry point's flags: those `sobert_api.stages` builds its command with."""
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.pretrain", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json (a validated RunSpec).")
    parser.add_argument("--dataset-id", required=True, help="Published dataset under <storage>/data/.")
    parser.add_argument("--workdir", required=True, type=Path, help="Node-local scratch for data and checkpoints.")
    parser.add_argument(
        "--peak-tflops", type=float, help="Each device's dense BF16 peak (TFLOP/s), for the MFU in progress records."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    from sobert_trainer.pretrain.model import TransformerImplUnavailable
    from sobert_trainer.pretrain.train import DivergedError, train

    try:
        return train(spec, args.dataset_id, args.workdir, args.peak_tflops)
    except (VocabularyMismatchError, TransformerImplUnavailable) as exc:  # no retry changes these
        exit_now(EXIT_BAD_INPUT, f"pretrain: {exc}")
    except DivergedError as exc:  # permanent: a restart from the last checkpoint would diverge the same way
        exit_now(EXIT_FAILED, str(exc))
    except Exception as exc:
        if lost_a_peer(exc):  # nothing is wrong with this rank: every replica restarts from the last checkpoint
            first = (str(exc).splitlines() or [""])[0]
            exit_now(
                EXIT_PEER_LOST, f"pretrain: a peer was lost ({type(exc).__name__}: {first}); exiting for a restart"
            )
        traceback.print_exc()
        exit_now(EXIT_FAILED, f"pretrain: {type(exc).__name__}: {exc}")


def lost_a_peer(exc: BaseException) -> bool:
    """A collective or the rendezvous store failed because another rank went away (its node
    crashed or was lost): c10d's `DistBackendError` / `DistNetworkError` (NCCL, the store), or
    gloo's transport error, which torch raises as a plain RuntimeError ("[.../gloo/transport/tcp/
    pair.cc:537] Read error ...: Connection reset by peer")."""
    from torch.distributed import DistBackendError, DistNetworkError

    return isinstance(exc, DistBackendError | DistNetworkError) or (
        isinstance(exc, RuntimeError) and "gloo/transport/" in str(exc)
    )


def exit_now(code: int, message: str) -> NoReturn:
    """Say why and exit at once. A failed rank's checkpoint writer processes (multiprocessing joins
    its children at exit) and its upload thread would otherwise keep the interpreter alive, and
    its pod would stay Running with nothing left to do, the job neither failed nor restarted. Its
    own children are killed first: the checkpoint writer's Manager ignores SIGTERM
    (`checkpoint.start_writer_helpers`) and, with the exit handlers skipped, would outlive the rank
    (outside a container, for good), holding whatever its parent's output went to."""
    report_error(message)
    for child in multiprocessing.active_children():
        child.kill()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
