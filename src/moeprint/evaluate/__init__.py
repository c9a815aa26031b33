"""Retention numbers: how much of its base a cut keeps (perplexity, KL, agreement, multiple choice,
generation health, speculative drafting, lm-eval), for one cut (`evaluate`) or a whole grid (`sweep`).

The names below load on first use: reading result files (`moeprint.evaluate.results`, used by the site)
must not pay for importing torch, which `evaluate` itself needs."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "RESULT_SCHEMA": "moeprint.evaluate.compare",
    "EvalSettings": "moeprint.evaluate.compare",
    "evaluate": "moeprint.evaluate.compare",
    "evaluate_loaded": "moeprint.evaluate.compare",
    "RETENTION_COLUMNS": "moeprint.evaluate.results",
    "load_retention": "moeprint.evaluate.results",
    "retention_markdown": "moeprint.evaluate.results",
    "read_result": "moeprint.evaluate.results",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
