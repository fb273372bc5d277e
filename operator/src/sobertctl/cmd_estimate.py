"""`sobertctl estimate PRESET --gpu h100 --nodes 1 --gpus-per-node 8`: what a run will cost.

Prints FLOPs, tokens, GPU-hours, wall time and dollars (with a low/high band) per phase, and the
prices and MFU it assumed with their sources. Without --finetune, the four tasks are included at
their public datasets' sizes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sobert_api.spec import TaskName
from sobert_operator.cost.money import usd
from sobertctl.specs import add_spec_arguments, spec_from_args

PLACEHOLDER = "<not read by estimate>"


def register(sub) -> None:
    parser = sub.add_parser("estimate", help="Forecast a run's cost: FLOPs, GPU-hours, time, dollars per phase.")
    add_spec_arguments(parser)
    parser.add_argument("--gpu", default=None, help="GPU type from the catalog (h100, a100-80gb, ...) or cpu.")
    parser.add_argument("--price", type=float, help="$/GPU-hour instead of the catalog's.")
    parser.add_argument("--mfu", type=float, help="Model FLOPs utilisation instead of the catalog's.")
    parser.add_argument("--catalog", type=Path, help="Price catalog YAML (default: the built-in one).")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sobert_operator.cost.catalog import load_catalog
    from sobert_operator.cost.devices import budget_problem, forecast_for

    if not args.posts:
        args.posts = [PLACEHOLDER]
    if not args.finetune:
        args.finetune = [f"{task.value}={PLACEHOLDER}" for task in TaskName]
    spec = spec_from_args(args, default_storage=".sobert")
    if args.gpu is None and args.procs_per_node is None and args.nodes is None:
        args.gpu = "h100" if spec.preset in ("base", "large") else "cpu"
    forecast = forecast_for(spec, load_catalog(args.catalog), gpu=args.gpu, price=args.price, mfu=args.mfu)
    if args.output == "json":
        print(json.dumps(forecast.as_dict(), indent=2))
    else:
        print(render_forecast(spec, forecast))
    problem = budget_problem(spec, forecast)
    if problem:
        print(f"\nover budget: {problem}")
    return 0


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 360 else f"{seconds:,.0f} s"


def render_forecast(spec, forecast) -> str:
    train, cpu = forecast.assumptions["train_device"], forecast.assumptions["cpu"]
    lines = [
        f"run {spec.name}: preset {spec.preset}, {spec.model.parameter_count() / 1e6:,.1f}M parameters, "
        f"{spec.parallel.nodes} node(s) x {spec.parallel.procs_per_node} {train['kind']}",
        "",
        "| phase | device | tokens | PFLOPs | wall time | $ | $ low-high | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in forecast.phases:
        lines.append(
            f"| {p.phase} | {p.devices} x {p.device} | {p.tokens:,} | {p.flops / 1e15:,.1f} | {_hours(p.seconds)} "
            f"| {usd(p.usd)} | {usd(p.usd_low)}-{usd(p.usd_high)} | {p.note} |"
        )
    lines += [
        f"| **total** | | | | {_hours(forecast.seconds)} | **{usd(forecast.usd)}** "
        f"| {usd(forecast.usd_low)}-{usd(forecast.usd_high)} | {forecast.gpu_hours:,.1f} GPU-hours |",
        "",
        "assumed:",
        f"  {train['kind']}: {usd(train['usd_per_hour'])}/device-hour ({train['price_source']}, {train['price_date']})",
        f"  MFU {train['mfu']:.2f}: {train['mfu_source']}",
        f"  CPU: {usd(cpu['usd_per_hour'])}/core-hour ({cpu['price_source']}, {cpu['price_date']})",
        f"  training FLOPs/token: {forecast.assumptions['flops_per_token']:.3e} "
        "(6N + 12·L·h·s, the LM head's share of N at the masked tokens only)",
    ]
    if spec.budget.usd is not None:
        lines.append(f"  budget: {usd(spec.budget.usd)}")
    return "\n".join(lines)
