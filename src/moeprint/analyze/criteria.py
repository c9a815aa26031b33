"""Ranking criteria: per-layer expert scores from fingerprint sums, and rankings best first.

Every criterion maps a LayerUsage (L, E sums of one domain) to scores (L, E), higher = keep first.
Ties break by expert id (a stable sort), so rankings are deterministic. Definitions with formulas
are in docs/analyze.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from moeprint.analyze.aggregate import LayerUsage
from moeprint.errors import MoeprintError
from moeprint.types import ALL

CRITERIA = ("frequency", "gate-mass", "reap", "reap-sum", "ean", "lift", "reference")
NORM_CRITERIA = ("reap", "reap-sum", "ean")
# The reference project's "harmful" models kept the least used safety experts: its unsafety.json
# is the safety ranking reversed. Exported next to the domains under the reference criterion.
REVERSED_DOMAINS = {"unsafety": "safety"}
LIFT_PRIOR_PER_EXPERT = 1.0  # Dirichlet prior mass per expert (alpha0 = E), spread by pooled usage


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise MoeprintError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    return criterion


def _need_norms(usage: LayerUsage, criterion: str) -> None:
    if usage.norm_sum is None or usage.weight_norm_sum is None:
        raise MoeprintError(
            f"criterion {criterion!r} needs expert output norms, but this run recorded none "
            "(record with expert norms, or choose frequency, gate-mass, lift or reference)."
        )


def lift_scores(usage: LayerUsage, usage_all: LayerUsage) -> np.ndarray:
    """Log-odds of an expert in the domain vs the rest, z-scored, with an informative Dirichlet prior.

    y_d, y_r: decisions routed to the expert in the domain / in the rest (all minus domain); n_d, n_r totals.
    alpha_e = alpha0 * p_all(e) with alpha0 = E; delta = logit_d - logit_r; z = delta / sqrt(1/(y_d+a) + 1/(y_r+a)).
    A rarely used expert has a large variance, so it cannot win on a lucky handful of tokens.
    """
    y_d = usage.tokens.astype(np.float64)  # (L, E)
    y_r = usage_all.tokens.astype(np.float64) - y_d
    n_d = y_d.sum(axis=1, keepdims=True)
    n_r = y_r.sum(axis=1, keepdims=True)
    n_experts = y_d.shape[1]
    alpha0 = LIFT_PRIOR_PER_EXPERT * n_experts
    p_all = (usage_all.tokens + 1.0) / (usage_all.tokens.sum(axis=1, keepdims=True) + n_experts)
    alpha = alpha0 * p_all
    logit_d = np.log(y_d + alpha) - np.log(n_d + alpha0 - y_d - alpha)
    logit_r = np.log(y_r + alpha) - np.log(n_r + alpha0 - y_r - alpha)
    return (logit_d - logit_r) / np.sqrt(1.0 / (y_d + alpha) + 1.0 / (y_r + alpha))


def expert_scores(usage: LayerUsage, criterion: str, usage_all: LayerUsage | None = None) -> np.ndarray:
    """Scores (L, E) of one domain under `criterion` (not `reference`, which is a ranking recipe)."""
    check_criterion(criterion)
    if criterion == "frequency":
        return usage.tokens.astype(np.float64)
    if criterion == "gate-mass":
        return usage.weight_sum.astype(np.float64)
    if criterion in NORM_CRITERIA:
        _need_norms(usage, criterion)
        if criterion == "reap":
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = usage.weight_norm_sum / usage.tokens
            return np.where(usage.tokens > 0, mean, 0.0)
        if criterion == "reap-sum":
            return usage.weight_norm_sum.astype(np.float64)
        return usage.norm_sum.astype(np.float64)  # ean
    if criterion == "lift":
        if usage_all is None:
            raise MoeprintError("criterion 'lift' needs the pooled usage of all domains.")
        rest = usage_all.tokens - usage.tokens
        if rest.sum() == 0:  # the domain is everything (e.g. `all`): no contrast, rank by frequency
            return usage.tokens.astype(np.float64)
        return lift_scores(usage, usage_all)
    raise MoeprintError("criterion 'reference' ranks by frequency then interleaves with `all`; use rank_experts.")


def ranking_from_scores(scores: np.ndarray) -> list[list[int]]:
    """Best first per layer; equal scores keep ascending expert id."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable").tolist()


def interleave(domain_ranking: list[int], all_ranking: list[int]) -> list[int]:
    """The reference's mix: domain[0], all[0], domain[1], all[1], ... skipping ids already taken."""
    out: list[int] = []
    seen: set[int] = set()
    for pair in zip(domain_ranking, all_ranking):
        for expert in pair:
            if expert not in seen:
                seen.add(expert)
                out.append(expert)
    return out


def rank_experts(
    usage_for_domain: LayerUsage | Mapping[str, np.ndarray],
    criterion: str,
    usage_all: LayerUsage | Mapping[str, np.ndarray] | None = None,
) -> list[list[int]]:
    """Per-layer rankings (every expert, best first) of one domain under `criterion`.

    `usage_*` is a LayerUsage or a mapping with at least `tokens` (L, E) and optionally
    `weight_sum`, `norm_sum`, `weight_norm_sum`, `n_tokens`. `lift` and `reference` need `usage_all`.
    """
    usage = _as_usage(usage_for_domain)
    pooled = _as_usage(usage_all) if usage_all is not None else None
    if criterion == "reference":
        if pooled is None:
            raise MoeprintError("criterion 'reference' interleaves with the pooled `all` ranking; pass usage_all.")
        own = ranking_from_scores(expert_scores(usage, "frequency"))
        base = ranking_from_scores(expert_scores(pooled, "frequency"))
        return [interleave(d, a) for d, a in zip(own, base)]
    return ranking_from_scores(expert_scores(usage, criterion, pooled))


def _as_usage(u: LayerUsage | Mapping[str, np.ndarray]) -> LayerUsage:
    if isinstance(u, LayerUsage):
        return u
    if "tokens" not in u:
        raise MoeprintError("usage mapping needs a 'tokens' (layers, experts) array.")
    return LayerUsage.from_counts(
        u["tokens"], u.get("weight_sum"), u.get("n_tokens"), u.get("norm_sum"), u.get("weight_norm_sum")
    )


def reference_rankings(
    rows: Mapping[str, np.ndarray], num_layers: int, num_experts: int, domains: list[str]
) -> dict[str, list[list[int]]]:
    """The reference project's exact recipe on its published summaries.

    rows: columns of published/summaries.parquet in file order (domain, sample_count, layer, expert,
    count_frequency; rows of one file/segment/layer in the file's key order).
    score(e) = sum over files and {think, answer} of count_frequency * sample_count * 0.5, divided by the
    summed sample_count of the analytics present; stable sort descending (ties in first-seen key order);
    each domain interleaved with `all`; `unsafety` = reversed `safety`.
    """
    domain_col = np.asarray(rows["domain"])
    layer = np.asarray(rows["layer"], dtype=np.intp)
    expert = np.asarray(rows["expert"], dtype=np.intp)
    mass = np.asarray(rows["count_frequency"], np.float64) * np.asarray(rows["sample_count"], np.float64) * 0.5

    def rank(mask: np.ndarray) -> list[list[int]]:
        out = []
        for l in range(num_layers):
            sel = mask & (layer == l)
            e = expert[sel]
            # the reference divides by the summed sample_count of (file, segment) analytics with this layer;
            # one row per expert, so count each (file, segment) once via its first key (key_order == 0)
            first = np.asarray(rows["key_order"])[sel] == 0
            total = float(np.asarray(rows["sample_count"], np.float64)[sel][first].sum()) or 1.0
            score = np.bincount(e, weights=mass[sel], minlength=num_experts) / total  # summed in row order
            seen_at = np.full(num_experts, len(e) + np.arange(num_experts))  # unseen: after, by id
            uniq, first_idx = np.unique(e, return_index=True)
            seen_at[uniq] = first_idx
            order = sorted(range(num_experts), key=lambda x: seen_at[x])  # the dict's key order
            out.append(sorted(order, key=lambda x: -score[x]))  # Python's sort is stable
        return out

    everything = np.ones(len(layer), dtype=bool)
    base = rank(everything)
    result = {ALL: base}
    for domain in domains:
        if domain == ALL:
            continue
        own = rank(domain_col == domain)
        result[domain] = [interleave(d, a) for d, a in zip(own, base)]
    for target, source in REVERSED_DOMAINS.items():
        if source in result:
            result[target] = [r[::-1] for r in result[source]]
    return result
