"""`sobertctl submit PRESET|-f spec.yaml --backend local`: run the whole pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from sobertctl.specs import add_spec_arguments, spec_from_args

DEFAULT_STORAGE = ".sobert"


def register(sub) -> None:
    parser = sub.add_parser("submit", help="Run prepare -> pretrain -> convert for a preset or spec file.")
    add_spec_arguments(parser)
    parser.add_argument(
        "--backend",
        choices=["local"],
        default="local",
        help="local: run here (torchrun on CPU/GPUs). The kubernetes backend comes with the controller.",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(DEFAULT_STORAGE) / "work", help="Local scratch for stage processes."
    )
    parser.add_argument("--dry-run", action="store_true", help="Validate and print the spec and commands; run nothing.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sobert_operator.launch import convert_command, pretrain_command

    spec = spec_from_args(args, default_storage=DEFAULT_STORAGE)
    if args.dry_run:
        print(spec.model_dump_json(indent=2))
        print("# pretrain: " + " ".join(pretrain_command(spec, "spec.json", "<dataset-id>", str(args.workdir))))
        print("# convert:  " + " ".join(convert_command("spec.json", "<dataset-id>")))
        return 0
    from sobert_operator.local_executor import LocalExecutor

    print(
        f"run {spec.name}: preset {spec.preset or '-'}, {spec.model.parameter_count():,} parameters, "
        f"{spec.train_iters:,} steps x {spec.train.global_batch_size} x {spec.model.seq_length} tokens, "
        f"{spec.parallel.world_size} process(es) "
        f"(TP {spec.parallel.tensor_parallel} x DP {spec.parallel.data_parallel})",
        flush=True,
    )
    executor = LocalExecutor(spec, args.workdir, emit=lambda line: print(line, flush=True))
    summary = executor.run().as_dict()
    print(f"\nrun {spec.name} complete")
    width = max(len(k) for k in summary["artifacts"])
    for name, uri in summary["artifacts"].items():
        print(f"  {name.upper():<{width}}  {uri}")
    total = sum(summary["stage_seconds"].values())
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items()) or "nothing left to do"
    print(f"  TIME  {timings} (total {total:.1f}s)")
    print(f"\nload it:  MegatronBertForMaskedLM.from_pretrained({summary['artifacts']['hf_model']!r})")
    return 0
