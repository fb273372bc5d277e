"""Build a RunSpec from a preset or file plus CLI flags (flags win; one validation path)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from sobert_api.loading import SpecError, build_spec, load_spec_file
from sobert_api.presets import deep_merge, preset_names, task_document
from sobert_api.spec import RunSpec, TaskName


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", help=f"Preset to start from: {', '.join(preset_names())}.")
    parser.add_argument("-f", "--file", type=Path, help="RunSpec YAML (instead of, or on top of, a preset).")
    parser.add_argument("--name", help="Run name (DNS-1123 label). Default: sobert-<preset>.")
    parser.add_argument("--storage", help="Storage prefix: a local directory or s3://bucket/prefix.")
    parser.add_argument("--endpoint-url", help="S3 endpoint for non-AWS servers.")
    parser.add_argument("--posts", nargs="+", help="Posts.xml dump(s): .xml/.gz/.bz2/.7z, local or s3://.")
    parser.add_argument("--comments", nargs="+", help="Comments.xml dump(s) matching the posts.")
    parser.add_argument("--nodes", type=int, help="Nodes for pretraining.")
    parser.add_argument(
        "--procs-per-node",
        "--gpus-per-node",
        dest="procs_per_node",
        type=int,
        help="torchrun processes (GPUs) per node.",
    )
    parser.add_argument("--tensor-parallel", "--tp", dest="tensor_parallel", type=int, help="Tensor-parallel degree.")
    parser.add_argument(
        "--finetune",
        action="append",
        default=[],
        metavar="TASK=TRAIN[,VALIDATION]",
        help="Finetune on a task after conversion (quality, closed, ner, obsoletion), with the preset's recipe; "
        "obsoletion with no file weak-labels the run's own posts and comments. Repeatable.",
    )
    parser.add_argument("--budget", type=float, metavar="USD", help="Dollar budget: refuse if the forecast exceeds it.")
    parser.add_argument(
        "--over-budget",
        action="store_true",
        help="Submit even when the forecast exceeds --budget (recorded in the run and its report).",
    )
    parser.add_argument("--spot", action="store_true", help="Price GPUs at spot rates.")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="Override any spec field, e.g. --set train.train_tokens=200000 (YAML value).",
    )


def set_path(document: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """`document` with `value` at the dotted path (`train.lr`), merged over what is there."""
    override: dict[str, Any] = {}
    cursor = override
    parts = dotted.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return deep_merge(document, override)


def spec_from_args(args: argparse.Namespace, default_storage: str | None = None) -> RunSpec:
    if not args.preset and not args.file:
        raise SpecError(f"give a preset ({', '.join(preset_names())}) or -f spec.yaml")
    overrides: dict[str, Any] = {}
    if args.preset:
        overrides["preset"] = args.preset
    flag_values = {
        "name": args.name,
        "storage.uri": args.storage,
        "storage.endpoint_url": args.endpoint_url,
        "data.posts": args.posts,
        "data.comments": args.comments,
        "parallel.nodes": args.nodes,
        "parallel.procs_per_node": args.procs_per_node,
        "parallel.tensor_parallel": args.tensor_parallel,
        "budget.usd": getattr(args, "budget", None),
        "budget.allow_over_forecast": True if getattr(args, "over_budget", False) else None,
        "budget.spot": True if getattr(args, "spot", False) else None,
    }
    for path, value in flag_values.items():
        if value is not None:
            overrides = set_path(overrides, path, value)
    for item in getattr(args, "finetune", []):
        task, _, files = item.partition("=")
        if task not in TaskName.__members__:
            raise SpecError(f"--finetune {item!r}: task must be one of {', '.join(TaskName)}")
        train, _, validation = files.partition(",")
        entry = task_document(args.preset, train=train or None, validation=validation or None)
        overrides = set_path(overrides, f"finetune.tasks.{task}", entry)
    for assignment in args.sets:
        path, sep, raw = assignment.partition("=")
        if not sep or not path:
            raise SpecError(f"--set {assignment!r}: expected PATH=VALUE, e.g. train.lr=1e-4")
        overrides = set_path(overrides, path.strip(), yaml.safe_load(raw))
    if args.file:
        return load_spec_file(args.file, overrides)
    if not args.posts and "posts" not in overrides.get("data", {}):
        raise SpecError(
            f"--posts is required: preset {args.preset} says how to train, not on what. Pass the Stack Exchange "
            "Posts.xml dump(s) to pretrain on (.xml, .gz, .bz2 or .7z; a local path, or on --backend kubernetes "
            "an s3:// URI the pods can read), e.g. --posts s3://bucket/stackoverflow.com-Posts.7z "
            "[--comments s3://bucket/stackoverflow.com-Comments.7z]"
        )
    document = deep_merge({"name": f"sobert-{args.preset}"}, overrides)
    if default_storage and "storage" not in document:
        document["storage"] = {"uri": default_storage}
    return build_spec(document, source="command line")
