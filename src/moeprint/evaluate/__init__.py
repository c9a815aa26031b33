"""Retention numbers: how much of its base a cut keeps (perplexity, KL, agreement, multiple choice,
generation health, speculative drafting, lm-eval), for one cut (`evaluate`) or a whole grid (`sweep`)."""

from moeprint.evaluate.compare import RESULT_SCHEMA, EvalSettings, evaluate, evaluate_loaded
from moeprint.evaluate.results import RETENTION_COLUMNS, load_retention, retention_markdown

__all__ = [
    "RESULT_SCHEMA",
    "RETENTION_COLUMNS",
    "EvalSettings",
    "evaluate",
    "evaluate_loaded",
    "load_retention",
    "retention_markdown",
]
