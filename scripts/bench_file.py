"""BENCHMARKS.md as a list of dated measurements, each a `## ` section of its own.

A section `make bench` writes carries a marker, `<!-- bench: NAME -->`, under its title, then the
date, the machine and the command that measured it, its tables and its raw figures. A re-run
replaces the sections it measured and keeps every other one as it was (those of another
measurement, or measured by hand, which say so under their own titles), so a table never mixes
figures of two runs, days or hosts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

INTRO = """# BENCHMARKS

One section per measurement: under each title, when it was measured, on which machine and with
which command. Figures of different machines or days are never in one table. `make bench`
(`python scripts/bench.py`) re-measures the sections marked `<!-- bench: NAME -->` and rewrites
only those (`--only NAME,...` for some of them); `make bench-gpu` (`scripts/bench_gpu.py`, on a
CUDA machine) rewrites the `gpu-*` ones; the others were measured by hand, as each says.
"""
_MARKER = re.compile(r"^<!-- bench: ([a-z0-9_-]+) -->$", re.M)


def cpu_model() -> str:
    """The CPU's model name for a section's machine line (`/proc/cpuinfo`), or "unknown CPU"."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def section(name: str, lines: list[str], *, date: str, machine: str, command: str, raw: Any) -> str:
    """One measurement's section: `lines` starts with its `## ` title."""
    body = "\n".join(lines).strip("\n")
    title, _, rest = body.partition("\n")
    if not title.startswith("## "):
        raise ValueError(f"measurement {name!r}: its section must start with a '## ' title, not {title!r}")
    stamp = f"Measured {date} on {machine}, with `{command}`."
    figures = json.dumps(raw, indent=2, sort_keys=True)
    details = f"<details><summary>Raw figures</summary>\n\n```json\n{figures}\n```\n\n</details>"
    return f"{title}\n<!-- bench: {name} -->\n\n{stamp}\n\n{rest.strip(chr(10))}\n\n{details}\n"


def sections_of(text: str) -> list[str]:
    """The `## ` sections of a BENCHMARKS.md, in order (the intro before them dropped)."""
    parts = re.split(r"(?m)^(?=## )", text)
    return [part.rstrip("\n") + "\n" for part in parts if part.startswith("## ")]


def measurement_name(block: str) -> str | None:
    """The `make bench` measurement a section holds, or None for one measured by hand."""
    found = _MARKER.search(block)
    return found.group(1) if found else None


def merge(existing: str, measured: dict[str, str]) -> str:
    """`existing` with the sections of `measured` (name -> section) replaced in place, new ones
    added after the others, and every other section kept as it was."""
    blocks, placed = [], set()
    for block in sections_of(existing):
        name = measurement_name(block)
        if name in measured:
            blocks.append(measured[name])
            placed.add(name)
        else:
            blocks.append(block)
    blocks += [block for name, block in measured.items() if name not in placed]
    return INTRO + "".join(f"\n{block}" for block in blocks)
