"""llm-compressor's two REAP report formats: the one module that reads and writes them.

Schemas, read from llm-compressor's source (not copied):
- `REAPPruningModifier(report_path=...)` writes the experts it kept: a JSON object mapping each MoE
  block's module name (e.g. `model.layers.3.mlp`, decoder-layer numbering) to its retained expert
  ids, ascending. Keys are written in string order (`layers.10` before `layers.2`).
- `REAPPruningModifier(prune=False, report_path=...)` writes a saliency report, read by
  `ExpertPruner.from_pretrained(..., saliency_report_path=...)`: a JSON object whose `saliency`
  (and `count`) hold one list of per-expert values per MoE layer, ordered by layer; the pruner
  keeps the highest values. moeprint writes `saliency` and `count`; it reads `saliency` and
  `count` if present and ignores other keys.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_json, read_json

LAYER_IN_NAME = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class KeptReport:
    """REAPPruningModifier's report_path: retained expert ids per decoder layer."""

    kept: dict[int, tuple[int, ...]]  # decoder layer -> ascending expert ids
    module_names: dict[int, str]


@dataclass(frozen=True)
class SaliencyReport:
    """The saliency report ExpertPruner reads: per MoE layer (in layer order), one value per expert."""

    saliency: tuple[tuple[float, ...], ...]
    count: tuple[tuple[float, ...], ...] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.saliency)

    def ranking(self) -> list[list[int]]:
        """Per layer, expert ids by descending saliency; equal values keep ascending id."""
        return [sorted(range(len(row)), key=lambda e: (-row[e], e)) for row in self.saliency]


def read_report(path: str | Path) -> KeptReport | SaliencyReport:
    """Either llm-compressor report, recognised by its shape; one clear error for anything else."""
    doc = read_json(path)
    if not isinstance(doc, dict) or not doc:
        raise MoeprintError(f"{path} is not an llm-compressor REAP report (expected a non-empty JSON object).")
    if "saliency" in doc:
        return _saliency_report(doc, path)
    return _kept_report(doc, path)


def _number_rows(value, key: str, path) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, list) or not value or not all(isinstance(r, list) and r for r in value):
        raise MoeprintError(f"{path}: `{key}` must be a list of per-expert lists, one per MoE layer.")
    rows = []
    for i, row in enumerate(value):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            raise MoeprintError(f"{path}: `{key}` layer {i} holds a value that is not a finite number.")
        rows.append(tuple(float(v) for v in row))
    if len({len(r) for r in rows}) != 1:
        raise MoeprintError(f"{path}: `{key}` layers list different numbers of experts.")
    return tuple(rows)


def _saliency_report(doc: dict, path) -> SaliencyReport:
    saliency = _number_rows(doc["saliency"], "saliency", path)
    count = _number_rows(doc["count"], "count", path) if "count" in doc else None
    if count is not None and (len(count) != len(saliency) or len(count[0]) != len(saliency[0])):
        raise MoeprintError(f"{path}: `count` and `saliency` cover different layers or experts.")
    return SaliencyReport(saliency, count)


def _kept_report(doc: dict, path) -> KeptReport:
    kept: dict[int, tuple[int, ...]] = {}
    names: dict[int, str] = {}
    for name, ids in doc.items():
        match = LAYER_IN_NAME.search(name)
        if match is None:
            raise MoeprintError(
                f"{path}: key {name!r} names no decoder layer (`...layers.<i>...`); "
                "is this a REAPPruningModifier report?"
            )
        layer = int(match[1])
        if layer in kept:
            raise MoeprintError(f"{path}: decoder layer {layer} appears twice ({names[layer]!r}, {name!r}).")
        if not isinstance(ids, list) or not ids or not all(type(i) is int for i in ids):
            raise MoeprintError(f"{path}: {name!r} must list integer expert ids.")
        if len(set(ids)) != len(ids) or min(ids) < 0:
            raise MoeprintError(f"{path}: {name!r} repeats an expert id or names a negative one.")
        kept[layer], names[layer] = tuple(sorted(ids)), name
    return KeptReport(dict(sorted(kept.items())), names)


def write_saliency_report(path: str | Path, saliency: list[list[float]], count: list[list[float]]) -> Path:
    """Write per-MoE-layer saliencies (and routed-token counts) in the format ExpertPruner reads."""
    doc = {
        "saliency": [[float(v) for v in row] for row in saliency],
        "count": [[float(v) for v in row] for row in count],
    }
    _saliency_report(doc, path)  # never write what the reader would refuse
    return atomic_write_json(path, doc, indent=None)
