"""A small run's cost records, as a budget-stopped tiny run leaves them, and its report written:
what the report tests render (tests/unit/test_report_render.py) and open in Chromium
(tests/integration/test_report_browser.py)."""

from __future__ import annotations

import json
from pathlib import Path

from sobert_api import build_spec, paths
from sobert_api.storage import Storage
from sobert_operator.cost.catalog import load_catalog
from sobert_operator.cost.devices import forecast_for
from sobert_operator.cost.ledger import Allocation
from sobert_operator.report import write_report

T0 = 1_795_000_000.0  # the run's start (unix seconds)


def write_sample_report(root: Path) -> tuple[Storage, dict, str]:
    """Run `rep` under `root`/s: its forecast, a prepare and a budget-stopped pretrain in the
    ledger, one progress record; then its report (JSON, Markdown, HTML), as of 100 s in."""
    document = {"preset": "tiny", "name": "rep", "data": {"posts": ["p"]}, "budget": {"usd": 0.01}}
    spec = build_spec({**document, "storage": {"uri": str(root / "s")}})
    storage = Storage.open(spec.storage.uri)
    storage.write_json(paths.forecast_key("rep"), forecast_for(spec, load_catalog()).as_dict())
    for a in (
        Allocation("rep-prepare", "prepare", "cpu", 2, 0.0446, T0, T0 + 30, "Completed"),
        Allocation("rep-pretrain", "pretrain", "cpu", 2, 0.0446, T0 + 31, T0 + 90, "BudgetStopped"),
    ):
        storage.append_line(paths.ledger_key("rep"), json.dumps(a.as_dict()))
    records = [
        {"step": 10, "train_iters": 40, "consumed_tokens": 20480, "loss": 8.3, "tokens_per_s": 18000.0,
         "validation_lm_loss": 8.35},
        {"step": 20, "train_iters": 40, "consumed_tokens": 40960, "loss": 8.1, "tokens_per_s": 18000.0,
         "validation_lm_loss": 8.2},
    ]  # fmt: skip
    storage.write_bytes(paths.progress_key("rep"), "".join(json.dumps(r) + "\n" for r in records).encode())
    report, markdown = write_report(spec, storage, now=T0 + 100)
    return storage, report, markdown
