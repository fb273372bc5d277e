"""`python -m sobert_trainer.data --spec spec.json --dataset-id ID`: the prepare stage of a run (cluster jobs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sobert_trainer.stage_cli import EXIT_BAD_INPUT, start_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.data", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json.")
    parser.add_argument("--dataset-id", required=True, help="Id to publish under <storage>/data/.")
    args = parser.parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    from sobert_trainer.data.dump import DumpFormatError
    from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset
    from sobert_trainer.storage import Storage

    try:
        prepare_dataset(
            PrepareConfig.from_spec(spec), Storage.open(spec.storage.uri, spec.storage.endpoint_url), args.dataset_id
        )
    except (DumpFormatError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
