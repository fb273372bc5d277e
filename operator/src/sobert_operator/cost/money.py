"""Dollar amounts for people: cents from a dollar up, micro-dollars below (a CPU smoke run costs
fractions of a cent, and "$0.00" would hide whether anything was charged)."""

from __future__ import annotations


def usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.6f}"
