"""`sobertctl report RUN`: the run's budget report, printed and written to its storage.

Writes runs/<run>/cost/report.{json,md,html}: spend over time against the budget and forecast,
per-phase forecast vs spend, throughput and tokens, finetune results, price provenance.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    parser = sub.add_parser("report", help="Budget report of a run (Markdown here; JSON/MD/HTML in storage).")
    parser.add_argument("run", help="Run name.")
    parser.add_argument("--storage", default=".sobert", help="Storage prefix holding runs/<run>/.")
    parser.add_argument("--endpoint-url", help="S3 endpoint for non-AWS servers.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sobert_api.storage import Storage
    from sobert_operator.report import write_report
    from sobertctl.cmd_stages import load_run_spec

    spec = load_run_spec(args.storage, args.endpoint_url, args.run)
    storage = Storage.open(args.storage, args.endpoint_url)
    _, markdown = write_report(spec, storage)
    print(markdown, end="")
    print(f"\nwritten: {storage.uri(f'runs/{spec.name}/cost')}/report.{{json,md,html}}")
    return 0
