"""BENCHMARKS.md as dated sections: a re-run replaces what it measured and keeps the rest."""

from __future__ import annotations

import json

import pytest
from bench_file import INTRO, measurement_name, merge, section, sections_of  # scripts/: on sys.path (testbed_plugin)

STAMP = {"date": "2026-12-05", "machine": "2 cores", "command": "python scripts/bench.py --only a"}
BY_HAND = "## Images (2026-12-04)\n\nMeasured by hand on 2026-12-04 on the polyglot machine.\n\n| a |\n"


def test_a_section_names_its_date_machine_command_and_raw_figures():
    text = section("a", ["", "## A", "", "| x |", "| 1 |"], raw={"x": 1}, **STAMP)
    lines = text.splitlines()
    assert lines[:4] == [
        "## A",
        "<!-- bench: a -->",
        "",
        "Measured 2026-12-05 on 2 cores, with `python scripts/bench.py --only a`.",
    ]
    assert "| x |\n| 1 |" in text and json.dumps({"x": 1}, indent=2) in text
    assert measurement_name(text) == "a"
    with pytest.raises(ValueError, match="must start with a '## ' title"):
        section("b", ["| x |"], raw={}, **STAMP)


def test_a_rerun_replaces_its_own_sections_in_place_and_keeps_every_other():
    old_a = section("a", ["## A", "old"], raw={"v": "old"}, **STAMP)
    b = section("b", ["## B", "kept"], raw={"v": "b"}, **{**STAMP, "date": "2026-12-01"})
    existing = merge("", {"a": old_a, "b": b}) + "\n" + BY_HAND
    new_a = section("a", ["## A", "new"], raw={"v": "new"}, **STAMP)
    c = section("c", ["## C", "added"], raw={}, **STAMP)
    merged = merge(existing, {"a": new_a, "c": c})
    assert merged.startswith(INTRO)
    assert sections_of(merged) == [new_a, b, BY_HAND, c]
    assert "old" not in merged and measurement_name(BY_HAND) is None
    assert merge(merged, {}) == merged  # nothing measured: the file as it was
