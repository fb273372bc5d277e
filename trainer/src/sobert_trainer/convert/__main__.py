"""`python -m sobert_trainer.convert --spec spec.json --dataset-id ID [--step N]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sobert_trainer.stage_cli import EXIT_BAD_INPUT, start_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.convert", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json.")
    parser.add_argument("--dataset-id", required=True, help="Dataset whose tokenizer ships with the model.")
    parser.add_argument("--step", type=int, default=None, help="Checkpoint step (default: newest complete).")
    args = parser.parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    from sobert_trainer.convert.megatron_to_hf import convert_run
    from sobert_trainer.storage import Storage

    try:
        convert_run(spec, Storage.open(spec.storage.uri, spec.storage.endpoint_url), args.dataset_id, args.step)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
