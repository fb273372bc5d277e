"""`sobertctl data prepare`: dumps -> tokenizer + Megatron shards under <out>/data/<dataset-id>/.

The preparation is the trainer's prepare stage (`python -m sobert_trainer.data`), given a spec
built from the flags; the dataset id is the one any run with these inputs and settings computes.
"""

from __future__ import annotations

import argparse
import json

from sobert_api import paths
from sobert_api.dataset import dataset_id
from sobert_api.loading import build_spec
from sobert_api.spec import RunSpec
from sobert_api.stages import prepare_args
from sobert_api.storage import Storage
from sobertctl.trainer_process import run_stage, spec_file

# The preset whose defaults a standalone preparation takes for what the flags do not set (the
# seed, the minimum document length): those of the SOBert releases.
PREPARE_PRESET = "base"


def register(sub) -> None:
    data = sub.add_parser("data", help="Data preparation.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser("prepare", help="Parse dumps, train the tokenizer, write Megatron shards.")
    prepare.add_argument(
        "--posts", nargs="+", required=True, help="Posts.xml dump(s): .xml/.gz/.bz2/.7z, local or s3://."
    )
    prepare.add_argument("--comments", nargs="*", default=[], help="Comments.xml dump(s) matching the posts.")
    prepare.add_argument("--out", required=True, help="Storage prefix (directory or s3://bucket/prefix).")
    prepare.add_argument("--endpoint-url", help="S3 endpoint for non-AWS servers.")
    prepare.add_argument("--vocab-size", type=int, default=50_000, help="BPE pieces (Megatron pads to x128).")
    prepare.add_argument("--unit", choices=["post", "thread"], default="post", help="One document per post or thread.")
    prepare.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Worker processes that parse and tokenize (the same dataset for any count).",
    )
    prepare.add_argument(
        "--tokenizer-train-docs", type=int, default=200_000, help="Documents sampled for BPE training."
    )
    prepare.add_argument(
        "--validation-fraction",
        type=float,
        default=0.01,
        help="Share of the posts held out for pretraining's validation loss, in shards of their own.",
    )
    prepare.add_argument("--dataset-id", help="Name to publish under (default: derived from inputs and settings).")
    prepare.add_argument("--force", action="store_true", help="Rebuild even if the dataset is already published.")
    prepare.set_defaults(handler=run_prepare)


def prepare_spec(args: argparse.Namespace) -> RunSpec:
    """The spec the prepare stage reads: the flags over the PREPARE_PRESET's data settings."""
    document = {
        "preset": PREPARE_PRESET,
        "name": "data-prepare",
        "storage": {"uri": args.out, "endpoint_url": args.endpoint_url},
        "model": {"vocab_size": args.vocab_size},
        "data": {
            "posts": args.posts,
            "comments": args.comments,
            "document_unit": args.unit,
            "workers": args.workers,
            "tokenizer_train_docs": args.tokenizer_train_docs,
            "validation_fraction": args.validation_fraction,
        },
    }
    return build_spec(document, source="command line")


def run_prepare(args: argparse.Namespace) -> int:
    spec = prepare_spec(args)
    dataset = args.dataset_id or dataset_id(spec)
    with spec_file(spec) as path:
        run_stage("sobertctl data prepare", prepare_args(path, dataset, force=args.force))
    storage = Storage.open(args.out, args.endpoint_url)
    manifest = storage.read_manifest(paths.dataset_prefix(dataset))
    if manifest is None:
        raise RuntimeError(f"sobertctl data prepare: {storage.uri(paths.dataset_prefix(dataset))} was not published")
    summary = {k: manifest[k] for k in ("dataset_id", "counts", "shards", "tokenizer", "timings_s")}
    summary["uri"] = storage.uri(paths.dataset_prefix(dataset))
    print(json.dumps(summary, indent=2))
    return 0
