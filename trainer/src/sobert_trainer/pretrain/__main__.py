"""`torchrun ... -m sobert_trainer.pretrain --spec spec.json --dataset-id ID --workdir DIR [--peak-tflops T]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sobert_trainer.stage_cli import EXIT_BAD_INPUT, start_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sobert_trainer.pretrain", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="The run's spec.json (a validated RunSpec).")
    parser.add_argument("--dataset-id", required=True, help="Published dataset under <storage>/data/.")
    parser.add_argument("--workdir", required=True, type=Path, help="Node-local scratch for data and checkpoints.")
    parser.add_argument(
        "--peak-tflops", type=float, help="Each device's dense BF16 peak (TFLOP/s), for the MFU in progress records."
    )
    args = parser.parse_args(argv)
    spec = start_stage(args.spec)
    if spec is None:
        return EXIT_BAD_INPUT
    from sobert_trainer.pretrain.train import train

    return train(spec, args.dataset_id, args.workdir, args.peak_tflops)


if __name__ == "__main__":
    sys.exit(main())
