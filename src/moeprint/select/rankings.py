"""Which experts a sweep keeps: top-N of a criterion's ranking (the analyze stage's
`fingerprints/rankings/<criterion>/<domain>.json`, or its `rank_experts` over the run's fingerprints),
or N at random (the floor every criterion must beat)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moeprint.errors import MoeprintError
from moeprint.io.atomic import json_exists
from moeprint.io.run import RunDir
from moeprint.types import ALL


def rankings_path(run: RunDir, criterion: str, domain: str) -> Path:
    from moeprint.analyze.fingerprints import ranking_path

    return ranking_path(run.fingerprints_dir, criterion, domain)


def load_ranking(run: RunDir, criterion: str, domain: str) -> tuple[dict[str, list[int]], str]:
    """(ranking in the published format, where it came from). The analyze stage's ranking file if it
    wrote one; otherwise the criterion computed by the analyze stage's own `rank_experts` from the run's
    fingerprints (so any criterion works on any analyzed run)."""
    from moeprint.analyze.fingerprints import has_manifest, read_ranking_document

    path = rankings_path(run, criterion, domain)
    if json_exists(path):
        return read_ranking_document(path), str(path)
    if not has_manifest(run.fingerprints_dir):
        raise MoeprintError(f"{run.root} has no fingerprints; run `moeprint analyze {run.root}` first.")
    from moeprint.analyze import CRITERIA, load_fingerprints, rank_experts

    if criterion not in CRITERIA:
        raise MoeprintError(f"unknown criterion {criterion!r} (known: {', '.join(CRITERIA)}).")
    manifest, usage_of = load_fingerprints(run.root)
    if domain not in manifest.get("domains", []) and domain != ALL:
        raise MoeprintError(
            f"{run.root} has no fingerprints of domain {domain!r} (it has: {', '.join(manifest.get('domains', []))})."
        )
    ranking = rank_experts(usage_of(None if domain == ALL else domain), criterion, usage_of(None))
    return {f"layer_{layer}": [int(e) for e in ids] for layer, ids in enumerate(ranking)}, "fingerprints"


def random_kept(num_layers: int, num_experts: int, n: int, seed: int, groups=None) -> tuple[tuple[int, ...], ...]:
    """N experts per layer drawn uniformly without replacement; the same seed gives the same draw.
    With group-limited routing (`groups`, an adapters ExpertGroups), N / n_group drawn in every group."""
    rng = np.random.default_rng(seed)
    if groups is not None:  # a random order, then the first N / n_group of each group in it
        return tuple(
            tuple(sorted(groups.select([int(e) for e in rng.permutation(num_experts)], n))) for _ in range(num_layers)
        )
    return tuple(tuple(sorted(int(e) for e in rng.choice(num_experts, n, replace=False))) for _ in range(num_layers))
