"""Fingerprints must come from calibration data disjoint from the evaluation data: a cut chosen on the
very texts it is scored on would look better than it is. The run's prompts (prompts.parquet: raw text,
chat messages, rendered text) are hashed and compared with every evaluation text, question and prompt
(`inputs.text_keys`: whole normalised text and its first 256 characters)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from moeprint.errors import MoeprintError
from moeprint.evaluate.inputs import text_keys
from moeprint.io.run import RunDir, read_prompts_table


def calibration_texts(run: RunDir) -> list[str]:
    """Every text the run's prompts consisted of; empty if the run keeps none (e.g. imported traces)."""
    table = read_prompts_table(run)
    if table is None:
        return []
    out = []
    for column in ("text", "rendered"):
        if column in table.column_names:
            out += [t for t in table[column].to_pylist() if t]
    if "messages" in table.column_names:
        for raw in table["messages"].to_pylist():
            if raw:
                try:
                    out += [m.get("content", "") for m in json.loads(raw) if isinstance(m, dict)]
                except json.JSONDecodeError:
                    continue
    return [t for t in out if t.strip()]


@dataclass(frozen=True)
class DisjointCheck:
    status: str  # "disjoint" | "unverified"
    n_calibration_texts: int
    n_evaluation_items: int

    def to_json(self) -> dict:
        return vars(self).copy()


def check_disjoint(run: RunDir, items: list[tuple[str, str]], allow_unverified: bool = False) -> DisjointCheck:
    """`items` are (label, text) of everything evaluated. Raises on any overlap; raises when the run
    records no prompt texts unless `allow_unverified`."""
    calibration = calibration_texts(run)
    if not calibration:
        if not allow_unverified:
            raise MoeprintError(
                f"{run.root} records no prompt texts, so disjointness from the evaluation data cannot be checked; "
                "pass --unverified-calibration to sweep anyway (the results will say so)."
            )
        return DisjointCheck("unverified", 0, len(items))
    seen: set[str] = set()
    for t in calibration:
        seen |= text_keys(t)
    overlapping = [label for label, t in items if text_keys(t) & seen]
    if overlapping:
        raise MoeprintError(
            f"{len(overlapping)} of {len(items)} evaluation items also occur in the calibration prompts of {run.root} "
            f"(first: {overlapping[0]}); fingerprints must come from data disjoint from the evaluation texts."
        )
    return DisjointCheck("disjoint", len(calibration), len(items))
