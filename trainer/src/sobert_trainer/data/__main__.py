"""`python -m sobert_trainer.data --spec spec.json --dataset-id ID [--force]`: prepare the dataset of
a run's spec (its `data` section and `model.vocab_size`) and publish it under <storage>/data/ID/.

The prepare stage of both executors and of `sobertctl data prepare` (`sobert_api.stages.prepare_args`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sobert_api.stages import EXIT_BAD_INPUT, EXIT_FAILED
from sobert_trainer.stage_cli import report_error, start_stage


def build_parser() -> argparse.ArgumentParser:
    """This entry point's flags: those `sobert_api.stages` builds its command with."""
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.data", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json.")
    parser.add_argument("--dataset-id", required=True, help="Id to publish under <storage>/data/.")
    parser.add_argument("--force", action="store_true", help="Rebuild even if the dataset is already published.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    from sobert_api.storage import Storage
    from sobert_trainer.data.dump import DumpFormatError
    from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset

    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    try:
        prepare_dataset(PrepareConfig.from_spec(spec), storage, args.dataset_id, force=args.force)
    except (DumpFormatError, FileNotFoundError, ValueError) as exc:
        report_error(exc)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
