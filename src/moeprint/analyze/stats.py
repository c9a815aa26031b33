"""Statistics over fingerprints: pure functions, arrays in, plain records out.

Two kinds of claims, kept apart (every record says which one it supports):
- usage: "domain d sends its tokens to different experts than the rest". Mostly reflects WHICH tokens a
  domain uses (an untrained model of the same shape looks nearly as specialised).
- token-controlled: "the same token is routed differently in domain d than elsewhere" (strata = token).

Unit of independence: prompts. Token-level tests (chi-square/G on decision counts) treat the k
decisions of every token as independent and overstate significance; the prompt-permutation tests
(domain labels shuffled across whole prompts) are the ones to cite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps


def shares(counts: np.ndarray) -> np.ndarray:
    """Normalise the last axis to shares (zeros stay zeros)."""
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros(counts.shape, np.float64), where=total > 0)


def tvd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total-variation distance along the last axis."""
    return 0.5 * np.abs(p - q).sum(axis=-1)


def bh(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted q-values (scipy.stats.false_discovery_control), NaN-safe."""
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = sps.false_discovery_control(p[ok], method="bh")
    return q


def g_tests(domain_counts: np.ndarray, rest_counts: np.ndarray) -> dict[str, np.ndarray]:
    """G-test of independence of each 2 x E table (domain vs rest decision counts), vectorised over
    leading axes: inputs (..., E) -> arrays (...). Experts unused in both rows are dropped (dof shrinks);
    equals scipy.stats.chi2_contingency(table, correction=False, lambda_="log-likelihood").
    """
    dom = np.asarray(domain_counts, dtype=np.float64)
    rest = np.asarray(rest_counts, dtype=np.float64)
    col = dom + rest
    n = col.sum(axis=-1, keepdims=True)
    used = col > 0
    n_dom, n_rest = dom.sum(axis=-1, keepdims=True), rest.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        exp_dom = np.where(used, n_dom * col / n, 1.0)
        exp_rest = np.where(used, n_rest * col / n, 1.0)
    obs = np.concatenate([np.where(used, dom, 1.0), np.where(used, rest, 1.0)], axis=-1)
    exp = np.concatenate([exp_dom, exp_rest], axis=-1)
    dof = used.sum(axis=-1) - 1.0
    valid = (dof >= 1) & (n_dom[..., 0] > 0) & (n_rest[..., 0] > 0)
    obs = np.where(valid[..., None], obs, 1.0)
    exp = np.where(valid[..., None], exp, 1.0)
    g = sps.power_divergence(obs, exp, lambda_="log-likelihood", axis=-1).statistic
    g = np.where(valid, g, np.nan)
    p = np.where(valid, sps.chi2.sf(g, np.maximum(dof, 1)), np.nan)
    with np.errstate(invalid="ignore"):
        v = np.sqrt(g / n[..., 0])  # Cramér's V of a 2-row table: min(rows, cols) - 1 = 1
    return {"g": g, "p": p, "dof": np.where(valid, dof, np.nan), "cramers_v": v}


def router_balance(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Entropy and load balance of expert usage per layer. counts (L, E)."""
    n_experts = counts.shape[-1]
    p = shares(counts.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0)).sum(axis=-1)
    mean = p.mean(axis=-1)
    return {
        "entropy_nats": h,
        "entropy_normalized": h / np.log(n_experts),  # 1 = perfectly even
        "effective_experts": np.exp(h),
        "cv": p.std(axis=-1) / np.where(mean > 0, mean, 1.0),  # coefficient of variation of the load
        "max_load_ratio": p.max(axis=-1) * n_experts,  # busiest expert vs an even share
        "dead_experts": (counts == 0).sum(axis=-1),
    }


def top_n_sets(counts: np.ndarray, n: int) -> np.ndarray:
    """Boolean (..., L, E) masks of the n most used experts per layer (ties by expert id)."""
    order = np.argsort(-counts, axis=-1, kind="stable")[..., :n]
    mask = np.zeros(counts.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a & b).sum(axis=-1)
    union = (a | b).sum(axis=-1)
    return np.divide(inter, union, out=np.ones(inter.shape), where=union > 0)


def prompt_permutation(
    prompt_counts: np.ndarray, labels: np.ndarray, n_domains: int, n_perm: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Usage claim, honest version: TVD(domain vs rest) per domain and layer, with a null from
    shuffling domain labels across prompts. prompt_counts (P, L, E), labels (P,) in 0..D-1.

    Returns observed (D, L), null_mean (D, L), p (D, L) = (1 + #null >= observed) / (1 + n_perm).
    """
    n_prompts, n_layers, n_experts = prompt_counts.shape
    flat = prompt_counts.reshape(n_prompts, -1).astype(np.float64)  # (P, L*E)
    total = flat.sum(axis=0)

    def statistic(lab: np.ndarray) -> np.ndarray:  # lab (B, P) -> (B, D, L)
        onehot = (lab[:, None, :] == np.arange(n_domains)[None, :, None]).astype(np.float64)  # (B, D, P)
        dom = onehot @ flat  # (B, D, L*E)
        rest = total[None, None, :] - dom
        dom = dom.reshape(*dom.shape[:2], n_layers, n_experts)
        rest = rest.reshape(*rest.shape[:2], n_layers, n_experts)
        return tvd(shares(dom), shares(rest))

    observed = statistic(labels[None, :])[0]
    exceed = np.zeros_like(observed)
    null_sum = np.zeros_like(observed)
    for start in range(0, n_perm, 64):
        b = min(64, n_perm - start)
        perm = np.stack([rng.permutation(labels) for _ in range(b)])
        null = statistic(perm)
        exceed += (null >= observed[None] - 1e-12).sum(axis=0)
        null_sum += null.sum(axis=0)
    return {"observed": observed, "null_mean": null_sum / max(n_perm, 1), "p": (1 + exceed) / (1 + n_perm)}


def bootstrap_domain(
    prompt_counts: np.ndarray, domain_rows: np.ndarray, top_n: int, n_boot: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Resample a domain's prompts with replacement: CI of its TVD to the pooled usage and the
    stability of its top-N kept set (Jaccard vs the full-data set, and between consecutive resamples)."""
    dom = prompt_counts[domain_rows].astype(np.float64)  # (Pd, L, E)
    pooled_share = shares(prompt_counts.sum(axis=0).astype(np.float64))  # (L, E)
    full_top = top_n_sets(dom.sum(axis=0), top_n)
    weights = rng.multinomial(len(domain_rows), np.full(len(domain_rows), 1.0 / len(domain_rows)), size=n_boot)
    boot = np.einsum("bp,ple->ble", weights.astype(np.float64), dom)  # (B, L, E)
    boot_tvd = tvd(shares(boot), pooled_share[None])  # (B, L)
    boot_top = top_n_sets(boot, top_n)  # (B, L, E)
    j_full = jaccard(boot_top, full_top[None])  # (B, L)
    j_pairs = jaccard(boot_top[1:], boot_top[:-1]) if n_boot > 1 else j_full
    return {
        "tvd_ci_low": np.percentile(boot_tvd, 2.5, axis=0),
        "tvd_ci_high": np.percentile(boot_tvd, 97.5, axis=0),
        "jaccard_vs_full_mean": j_full.mean(axis=0),
        "jaccard_vs_full_p05": np.percentile(j_full, 5, axis=0),
        "jaccard_between_resamples_mean": j_pairs.mean(axis=0),
    }


def choose_strata(token_domain_counts: dict[Any, np.ndarray], min_count: int, max_tokens: int) -> list[Any]:
    """Tokens seen >= min_count times in at least two domains, most frequent first."""
    keys = list(token_domain_counts)
    if not keys:
        return []
    mat = np.stack([token_domain_counts[k] for k in keys])  # (V, D)
    ok = (mat >= min_count).sum(axis=1) >= 2
    order = np.argsort(-mat.sum(axis=1), kind="stable")
    return [keys[i] for i in order if ok[i]][:max_tokens]


def _token_cells(
    pair_token: np.ndarray,
    pair_domain: np.ndarray,
    counts_flat: np.ndarray,
    n_tokens: int,
    n_domains: int,
    shape: tuple[int, int],
) -> np.ndarray:
    """(K, D, L, E) decision counts per (token, domain) from per-(prompt, token) pair rows (sparse product)."""
    from scipy.sparse import csr_matrix

    n_pairs = len(pair_token)
    indicator = csr_matrix(
        (np.ones(n_pairs), (pair_token * n_domains + pair_domain, np.arange(n_pairs))),
        shape=(n_tokens * n_domains, n_pairs),
    )
    return np.asarray(indicator @ counts_flat).reshape(n_tokens, n_domains, *shape)


def _within_token(cell: np.ndarray) -> dict[str, np.ndarray]:
    """Per (domain, layer): excess G summed over token strata, and the decision-weighted within-token TVD.

    Excess G = sum_k (G_k - dof_k): under "routing independent of domain given the token" each G_k has mean
    ~dof_k whatever the cell sizes, so unequal token mixes between domains do not inflate it (a raw TVD would).
    """
    rest = cell.sum(axis=1, keepdims=True) - cell
    res = g_tests(cell, rest)  # (K, D, L)
    excess_g = np.nansum(res["g"] - res["dof"], axis=0)
    decisions = np.where(np.isfinite(res["g"]), cell.sum(axis=-1), 0.0).sum(axis=0)
    d = tvd(shares(cell), shares(rest))  # (K, D, L)
    w = cell.sum(axis=-1) * (rest.sum(axis=-1) > 0)
    wsum = w.sum(axis=0)
    weighted_tvd = np.divide((d * w).sum(axis=0), wsum, out=np.full(wsum.shape, np.nan), where=wsum > 0)
    return {
        "excess_g": excess_g / np.maximum(decisions, 1),
        "tvd": weighted_tvd,
        "g": np.nansum(res["g"], axis=0),
        "dof": np.nansum(res["dof"], axis=0),
    }


def token_controlled(
    pair_prompt: np.ndarray,
    pair_token: np.ndarray,
    counts: np.ndarray,
    prompt_labels: np.ndarray,
    n_tokens: int,
    n_domains: int,
    n_perm: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Does the same token route differently by domain? counts (N, L, E) per (prompt, token) pair.

    Test statistic: excess G per decision (see _within_token), with a null from shuffling domain labels
    across whole prompts (prompts stay the unit of independence). Effect size: within-token TVD, observed
    and under the null. Also the token-level stratified G-test (sum of per-stratum G, summed dof, chi2):
    it treats decisions as independent and is reported only as the anti-conservative bound.
    """
    shape = counts.shape[1:]
    flat = counts.reshape(len(counts), -1).astype(np.float64)  # (N, L*E)
    obs = _within_token(_token_cells(pair_token, prompt_labels[pair_prompt], flat, n_tokens, n_domains, shape))
    exceed = np.zeros_like(obs["excess_g"])
    null_tvd = np.zeros_like(obs["excess_g"])
    for _ in range(n_perm):
        perm = rng.permutation(prompt_labels)
        null = _within_token(_token_cells(pair_token, perm[pair_prompt], flat, n_tokens, n_domains, shape))
        exceed += null["excess_g"] >= obs["excess_g"] - 1e-12
        null_tvd += np.nan_to_num(null["tvd"])
    p_token_level = np.where(obs["dof"] > 0, sps.chi2.sf(obs["g"], np.maximum(obs["dof"], 1)), np.nan)
    return {
        "observed": obs["tvd"],
        "null_mean": null_tvd / max(n_perm, 1),
        "excess_g": obs["excess_g"],
        "p": (1 + exceed) / (1 + n_perm),
        "stratified_g": obs["g"],
        "stratified_dof": obs["dof"],
        "p_token_level": p_token_level,
    }


# ---- the site's domain view: one domain against the rest of the run, per layer ------------------
# Caveat shown on the page: a token picks k experts without replacement and tokens of one prompt are
# correlated, so the counts are not independent draws and p-values are optimistic; read the effect sizes.


def two_sample_layer_tests(a: np.ndarray, b: np.ndarray) -> dict[str, list[float]]:
    """a, b: (L, E) expert counts of two disjoint selections. One test per layer, BH across layers."""
    out: dict[str, list] = {"chi2": [], "g": [], "df": [], "p": [], "p_g": [], "cramers_v": [], "tvd": []}
    for ra, rb in zip(a.astype(float), b.astype(float)):
        keep = (ra + rb) > 0
        table = np.stack([ra[keep], rb[keep]])  # (2, E')
        if table.shape[1] < 2 or table[0].sum() == 0 or table[1].sum() == 0:
            for key in out:
                out[key].append(float("nan") if key != "df" else 0)
            continue
        chi2, p, df, _ = sps.chi2_contingency(table, correction=False)
        g, p_g, _, _ = sps.chi2_contingency(table, correction=False, lambda_="log-likelihood")
        n = table.sum()
        out["chi2"].append(float(chi2))
        out["g"].append(float(g))
        out["df"].append(int(df))
        out["p"].append(float(p))
        out["p_g"].append(float(p_g))
        out["cramers_v"].append(float(np.sqrt(chi2 / n)))  # 2 rows: min(r, c) - 1 = 1
        out["tvd"].append(float(0.5 * np.abs(ra / ra.sum() - rb / rb.sum()).sum()))
    out["q"] = bh(np.array(out["p"], dtype=float)).tolist()
    return out


def split_half_stability(per_prompt: np.ndarray, n_keep: int, n_splits: int = 20, seed: int = 0) -> list[float]:
    """Mean Jaccard overlap, per layer, of the top-`n_keep` experts (by token count) of two random halves
    of the prompts. 1.0: any half of the prompts picks the same kept set. per_prompt: (P, L, E)."""
    P, L, E = per_prompt.shape
    if P < 2:
        return [float("nan")] * L
    rng = np.random.default_rng(seed)
    total = np.zeros(L)
    for _ in range(n_splits):
        order = rng.permutation(P)
        halves = per_prompt[order[: P // 2]].sum(0), per_prompt[order[P // 2 :]].sum(0)  # (L, E) each
        # stable argsort on negated counts: ties broken by expert id, as a ranking file would be
        tops = [np.argsort(-h, axis=1, kind="stable")[:, :n_keep] for h in halves]
        for layer in range(L):
            s1, s2 = set(tops[0][layer].tolist()), set(tops[1][layer].tolist())
            total[layer] += len(s1 & s2) / len(s1 | s2)
    return (total / n_splits).tolist()


def usage_entropy_bits(tokens: np.ndarray) -> list[float]:
    """Per layer, entropy (bits) of the expert-usage distribution (counts normalised to sum 1)."""
    out = []
    for row in tokens.astype(float):
        total = row.sum()
        out.append(float(sps.entropy(row / total, base=2)) if total > 0 else float("nan"))
    return out
