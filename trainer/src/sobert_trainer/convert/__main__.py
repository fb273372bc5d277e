"""`python -m sobert_trainer.convert --spec spec.json --dataset-id ID [--step N]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sobert_api.stages import EXIT_BAD_INPUT, EXIT_FAILED
from sobert_trainer.stage_cli import report_error, start_stage


def build_parser() -> argparse.ArgumentParser:
    """This entry point's flags: those `sobert_api.stages` builds its command with."""
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.convert", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json.")
    parser.add_argument("--dataset-id", required=True, help="Dataset whose tokenizer ships with the model.")
    parser.add_argument("--step", type=int, default=None, help="Checkpoint step (default: newest complete).")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    from sobert_api.storage import Storage
    from sobert_trainer.convert.megatron_to_hf import convert_run

    try:
        convert_run(spec, Storage.open(spec.storage.uri, spec.storage.endpoint_url), args.dataset_id, args.step)
    except FileNotFoundError as exc:
        report_error(exc)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
