"""Signals: the scoring model, its windows, and its compilation to SQL."""

from upsignal.signals.compiler import compile_scoring_query
from upsignal.signals.model import ScoringModel, load_model

__all__ = ["ScoringModel", "compile_scoring_query", "load_model"]
