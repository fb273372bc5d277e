"""sobertctl entry point: one module per subcommand, one exit path."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from sobert_api.loading import SpecError
from sobertctl import cmd_data, cmd_estimate, cmd_eval, cmd_report, cmd_runs, cmd_stages, cmd_submit

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sobertctl", description="Train StackOverflow BERT models within a budget.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show every log line of every stage.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (cmd_submit, cmd_estimate, cmd_runs, cmd_data, cmd_stages, cmd_eval, cmd_report):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # megatron-core warns at import that TE/Apex are absent; on CPU that is expected, not news.
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.verbose:
        import os

        os.environ["SOBERT_VERBOSE"] = "1"
    try:
        return int(args.handler(args) or EXIT_OK)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
