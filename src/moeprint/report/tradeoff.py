"""The trade-off view: for each expert count N, how much of a domain's routing the kept experts hold.

For a ranking (per layer, best first) and N, the kept set of layer l is its first N experts.
traffic(N) = sum over layers of tokens routed to kept experts / all routed decisions;
reap(N)    = the same with summed gate weight x expert output norm (REAP's numerator), when recorded.
Beside them, the measured in-domain perplexity retention (base / cut) of a sweep's cuts at N.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def kept_share(values: np.ndarray, ranking: list[list[int]], n: int) -> float | None:
    """Share of `values` (L, E) held by the first `n` experts of each layer's ranking."""
    total = float(values.sum())
    if total <= 0:
        return None
    kept = sum(float(values[layer, ids[:n]].sum()) for layer, ids in enumerate(ranking))
    return kept / total


def tradeoff(
    tokens: np.ndarray,
    reap: np.ndarray | None,
    rankings: dict[str, list[list[int]]],
    retention: dict[str, dict[int, float]],
) -> dict[str, dict[str, Any]]:
    """{criterion: {n, traffic, reap, retention, randomRetention}} for every ranking of one domain."""
    num_experts = tokens.shape[1]
    sizes = list(range(1, num_experts + 1))
    out = {}
    for criterion, ranking in rankings.items():
        measured = retention.get(criterion, {})
        out[criterion] = {
            "n": sizes,
            "traffic": [kept_share(tokens, ranking, n) for n in sizes],
            "reap": [kept_share(reap, ranking, n) for n in sizes] if reap is not None else None,
            "retention": [measured.get(n) for n in sizes] if measured else None,
            "randomRetention": [retention.get("random", {}).get(n) for n in sizes] if retention.get("random") else None,
        }
    return out
