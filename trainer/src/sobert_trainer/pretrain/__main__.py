"""`torchrun ... -m sobert_trainer.pretrain --spec spec.json --dataset-id ID --workdir DIR`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sobert_api.loading import SpecError, build_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.pretrain", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json (a validated RunSpec).")
    parser.add_argument("--dataset-id", required=True, help="Published dataset under <storage>/data/.")
    parser.add_argument("--workdir", required=True, type=Path, help="Node-local scratch for data and checkpoints.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import json

    try:
        spec = build_spec(json.loads(args.spec.read_text()), source=str(args.spec))
    except (OSError, ValueError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from sobert_trainer.pretrain.train import train

    return train(spec, args.dataset_id, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
