"""Tier assignment with hysteresis, as a SQL expression.

An account is in the highest tier whose ``min`` its score reaches, or whose
``exit_below`` it still reaches while it was already in that tier or a higher
one. With a pql band of min 80 and exit_below 70, scores 60, 85, 95, 78, 88
give cold, pql, pql, pql, pql: one entry.
"""

from __future__ import annotations

from upsignal.signals.compiler import literal
from upsignal.signals.model import ScoringModel


def tier_rank_sql(model: ScoringModel, column: str) -> str:
    """SQL for the rank (0 = lowest) of the tier named in ``column``; -1 for NULL."""
    branches = " ".join(f"WHEN {literal(t.name)} THEN {rank}" for rank, t in enumerate(model.tiers))
    return f"CASE {column} {branches} ELSE -1 END"


def tier_sql(model: ScoringModel, score: str, previous_tier: str) -> str:
    """SQL for the tier of ``score`` given the account's previous tier (a column, maybe NULL)."""
    previous_rank = tier_rank_sql(model, previous_tier)
    branches = []
    for rank in range(len(model.tiers) - 1, 0, -1):
        tier = model.tiers[rank]
        branches.append(
            f"WHEN {score} >= {literal(tier.min)}"
            f" OR ({previous_rank} >= {rank} AND {score} >= {literal(tier.exit_below)})"
            f" THEN {literal(tier.name)}"
        )
    return f"CASE {' '.join(branches)} ELSE {literal(model.tiers[0].name)} END"

