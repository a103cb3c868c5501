"""Scoring: points, tiers with hysteresis, snapshots and explanations."""

from upsignal.scoring.explain import Explanation, explain_account
from upsignal.scoring.run import ScoreRun, score_accounts

__all__ = ["Explanation", "ScoreRun", "explain_account", "score_accounts"]
