"""`sobertctl data prepare`: dumps -> tokenizer + Megatron shards under <out>/data/<dataset-id>/."""

from __future__ import annotations

import argparse


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
    prepare.add_argument("--dataset-id", help="Name to publish under (default: derived from inputs and settings).")
    prepare.add_argument("--force", action="store_true", help="Rebuild even if the dataset is already published.")
    prepare.set_defaults(handler=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    import json

    from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset
    from sobert_trainer.storage import Storage

    if args.vocab_size < 16 or args.workers < 1:
        raise ValueError("--vocab-size must be >= 16 and --workers >= 1")
    config = PrepareConfig(
        posts=args.posts,
        comments=args.comments,
        vocab_size=args.vocab_size,
        document_unit=args.unit,
        workers=args.workers,
        tokenizer_train_docs=args.tokenizer_train_docs,
        endpoint_url=args.endpoint_url,
    )
    storage = Storage.open(args.out, args.endpoint_url)
    manifest = prepare_dataset(config, storage, args.dataset_id, force=args.force)
    summary = {k: manifest[k] for k in ("dataset_id", "counts", "shards", "tokenizer", "timings_s")}
    summary["uri"] = storage.uri(f"data/{manifest['dataset_id']}")
    print(json.dumps(summary, indent=2))
    return 0
