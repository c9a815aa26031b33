"""Which experts a sweep keeps: top-N of a criterion's ranking (the analyze stage's
`fingerprints/rankings/<criterion>/<domain>.json`, or its `rank_experts` over the run's fingerprints),
or N at random (the floor every criterion must beat)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moeprint.errors import MoeprintError
from moeprint.io.atomic import json_exists
from moeprint.io.run import RunDir


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
    if domain not in manifest.get("domains", []) and domain != "all":
        raise MoeprintError(
            f"{run.root} has no fingerprints of domain {domain!r} (it has: {', '.join(manifest.get('domains', []))})."
        )
    ranking = rank_experts(usage_of(None if domain == "all" else domain), criterion, usage_of(None))
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


def parse_sizes(spec: str, num_experts: int) -> list[int]:
    """'8,16' or '50%,25%' (of the model's experts, rounded, at least 1) -> sorted unique counts."""
    sizes = set()
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        try:
            n = round(num_experts * float(item[:-1]) / 100) if item.endswith("%") else int(item)
        except ValueError:
            raise MoeprintError(f"--sizes item {item!r} is not a count or a percentage.") from None
        if not 1 <= n <= num_experts:
            raise MoeprintError(f"--sizes item {item!r} is outside 1..{num_experts} experts.")
        sizes.add(max(n, 1))
    if not sizes:
        raise MoeprintError("--sizes names no size.")
    return sorted(sizes)
