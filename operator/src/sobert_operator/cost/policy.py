"""Budget enforcement: what to do at a given spend. Pure; both executors apply its answer.

ok -> warn (event + condition) at warn_fraction -> checkpoint (ask the trainer to save now) at
checkpoint_fraction -> stop (checkpointed suspend: runPolicy.suspend / RayJob suspend, or SIGTERM
locally) at the budget. Raising the budget above the spend returns the run to ok, which resumes it.
"""

from __future__ import annotations

from enum import StrEnum

from sobert_api.spec import BudgetSpec


class BudgetAction(StrEnum):
    ok = "ok"
    warn = "warn"
    checkpoint = "checkpoint"
    stop = "stop"


def budget_action(spend_usd: float, budget: BudgetSpec) -> BudgetAction:
    if budget.usd is None:
        return BudgetAction.ok
    share = spend_usd / budget.usd
    if share >= 1:
        return BudgetAction.stop
    if share >= budget.checkpoint_fraction:
        return BudgetAction.checkpoint
    if share >= budget.warn_fraction:
        return BudgetAction.warn
    return BudgetAction.ok


def seconds_left(spend_usd: float, budget: BudgetSpec, burn_usd_per_hour: float) -> int | None:
    """Seconds until the budget is spent at the current burn rate (for activeDeadlineSeconds); None: no limit."""
    if budget.usd is None or burn_usd_per_hour <= 0:
        return None
    return max(0, int((budget.usd - spend_usd) / burn_usd_per_hour * 3600))


def threshold_seconds(spend_usd: float, budget: BudgetSpec, burn_usd_per_hour: float) -> dict[BudgetAction, float]:
    """Seconds from now until each threshold is crossed at the current burn (local timers)."""
    if budget.usd is None or burn_usd_per_hour <= 0:
        return {}
    shares = {
        BudgetAction.warn: budget.warn_fraction,
        BudgetAction.checkpoint: budget.checkpoint_fraction,
        BudgetAction.stop: 1.0,
    }
    return {
        action: max(0.0, (share * budget.usd - spend_usd) / burn_usd_per_hour * 3600)
        for action, share in shares.items()
    }
