"""`moeprint analyze` and `moeprint export-rankings`: run directory in, fingerprints/ out.

Reads through runio (the only I/O), computes with aggregate/criteria/stats (pure), writes
RUN/fingerprints/ atomically with manifest.json last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from moeprint.analyze.aggregate import LayerUsage
from moeprint.analyze.criteria import (
    ALL_DOMAIN,
    CRITERIA,
    NORM_CRITERIA,
    REVERSED_DOMAINS,
    check_criterion,
    expert_scores,
    rank_experts,
    reference_rankings,
)
from moeprint.analyze.runio import (
    SEGMENT_SELECTIONS,
    coactivation_table,
    read_usage,
    scan_run,
    scan_token_strata,
    usage_table,
    write_parquet,
)
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json, read_parquet
from moeprint.io.manifest import RunManifest
from moeprint.io.run import RunDir, open_run

CLAIMS = {
    "usage_token_level": "usage: the domain's tokens pick different experts than the rest's. Token-level G-test "
    "on decision counts; decisions are not independent, so p/q overstate significance.",
    "usage_prompt_permutation": "usage: same claim, tested by shuffling domain labels across whole prompts "
    "(the honest p/q). Usage differences mostly reflect which tokens a domain uses.",
    "token_controlled": "token-controlled: the SAME token is routed differently in the domain than elsewhere "
    "(strata = token; labels shuffled across prompts). This is the specialisation claim.",
    "stability": "how reproducible a domain's top-N kept set is when its prompts are resampled.",
}

EXPORT_FORMATS = ("published", "llmcompressor")


def check_domains(requested: list[str] | None, known: list[str]) -> list[str]:
    if not requested:
        return list(known)
    unknown = [d for d in requested if d not in known and d != ALL_DOMAIN]
    if unknown:
        raise MoeprintError(f"unknown domain(s) {', '.join(unknown)}; this run has {', '.join(known)}.")
    return [d for d in requested if d != ALL_DOMAIN]


def check_segment(segment: str) -> list[str]:
    if segment not in SEGMENT_SELECTIONS:
        raise MoeprintError(f"unknown segment {segment!r}; choose one of {', '.join(SEGMENT_SELECTIONS)}.")
    return SEGMENT_SELECTIONS[segment]


def default_criteria(has_norms: bool) -> list[str]:
    return [c for c in CRITERIA if has_norms or c not in NORM_CRITERIA]


def compute_rankings(
    criterion: str,
    domains: list[str],
    usage_of: Callable[[str | None], LayerUsage],
    summaries: dict[str, np.ndarray] | None,
    num_layers: int,
    num_experts: int,
) -> dict[str, list]:
    """{domain: per-layer rankings} for the domains and `all` (and `unsafety` under reference)."""
    if criterion == "reference" and summaries is not None:
        ranked = reference_rankings(summaries, num_layers, num_experts, domains)
        return {d: r for d, r in ranked.items() if d in domains or d == ALL_DOMAIN or d in REVERSED_DOMAINS}
    pooled = usage_of(None)
    if pooled.n_tokens == 0:  # a ranking of no tokens would be the identity order 0..E-1 dressed up as a result
        raise MoeprintError(
            "the run has no routed tokens in the chosen segment, so nothing can be ranked; choose another --segment."
        )
    out = {ALL_DOMAIN: rank_experts(pooled, criterion, pooled)}
    for d in domains:
        usage = usage_of(d)
        if usage.n_tokens:  # a domain without routed tokens (e.g. summaries only) gets no ranking file
            out[d] = rank_experts(usage, criterion, pooled)
    if criterion == "reference":
        for target, source in REVERSED_DOMAINS.items():
            if source in out:
                out[target] = [r[::-1] for r in out[source]]
    return out


def to_published(ranking: list[list[int]]) -> dict[str, list[int]]:
    return {f"layer_{l}": [int(e) for e in r] for l, r in enumerate(ranking)}


def read_summaries(run: RunDir) -> dict[str, np.ndarray] | None:
    path = run.root / "published" / "summaries.parquet"
    if not path.exists():
        return None
    table = read_parquet(path, columns=["domain", "sample_count", "layer", "expert", "key_order", "count_frequency"])
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _domain_stats(
    scan,
    domains: list[str],
    selected: list[str],
    top_n: int,
    n_perm: int,
    n_boot: int,
    token_perm: int,
    min_token_count: int,
    max_tokens: int,
    run: RunDir,
    manifest: RunManifest,
    rng: np.random.Generator,
) -> dict[str, Any]:
    from moeprint.analyze import stats as st  # scipy.stats takes seconds to import; only analyze needs it

    sums, prompts = scan.sums, scan.prompts
    all_domains = list(sums.domains)
    pooled = sums.select(None, selected)
    labels = np.array([all_domains.index(d) for d in prompts.prompt_domains], dtype=np.intp)
    perm = st.prompt_permutation(prompts.counts, labels, len(all_domains), n_perm, rng) if len(labels) else None

    tokens = st.choose_strata(scan.token_domain_counts, min_token_count, max_tokens)
    tc = None
    if tokens and len(labels):
        pair_prompt, pair_token, pair_counts = scan_token_strata(run, manifest, selected, tokens, prompts.prompt_ids)
        tc = st.token_controlled(
            pair_prompt, pair_token, pair_counts, labels, len(tokens), len(all_domains), token_perm, rng
        )

    out: dict[str, Any] = {"all": {k: v.tolist() for k, v in st.router_balance(pooled.tokens).items()}}
    for d in domains:
        di = all_domains.index(d)
        dom = sums.select([d], selected)
        rest_tokens = pooled.tokens - dom.tokens
        rows = np.flatnonzero(labels == di)
        rec: dict[str, Any] = {"n_prompts": int(len(rows)), "n_tokens": int(dom.n_tokens)}
        if dom.n_tokens == 0 or rest_tokens.sum() == 0:
            rec["note"] = "no tokens in this domain or no rest to compare with"
            out[d] = rec
            continue
        g = st.g_tests(dom.tokens, rest_tokens)
        rec["usage_token_level"] = {
            "g": g["g"].tolist(),
            "dof": g["dof"].tolist(),
            "p": g["p"].tolist(),
            "q": st.bh(g["p"]).tolist(),
            "cramers_v": g["cramers_v"].tolist(),
        }
        rec["tvd_vs_rest"] = st.tvd(st.shares(dom.tokens), st.shares(rest_tokens)).tolist()
        rec["tvd_vs_all"] = st.tvd(st.shares(dom.tokens), st.shares(pooled.tokens)).tolist()
        top_d, top_all = st.top_n_sets(dom.tokens, top_n), st.top_n_sets(pooled.tokens, top_n)
        rec[f"top{top_n}_overlap_with_all"] = (top_d & top_all).sum(axis=-1).tolist()
        if perm is not None:
            rec["usage_prompt_permutation"] = {
                "tvd_observed": perm["observed"][di].tolist(),
                "tvd_null_mean": perm["null_mean"][di].tolist(),
                "tvd_excess": (perm["observed"][di] - perm["null_mean"][di]).tolist(),
                "p": perm["p"][di].tolist(),
                "q": st.bh(perm["p"][di]).tolist(),
                "n_perm": n_perm,
            }
        if len(rows) >= 2:
            boot = st.bootstrap_domain(prompts.counts, rows, top_n, n_boot, rng)
            rec["stability"] = {k: v.tolist() for k, v in boot.items()} | {"n_boot": n_boot, "top_n": top_n}
        if tc is not None and np.isfinite(tc["observed"][di]).any():
            rec["token_controlled"] = {
                "tvd_observed": _nan_list(tc["observed"][di]),
                "tvd_null_mean": _nan_list(tc["null_mean"][di]),
                "tvd_excess": _nan_list(tc["observed"][di] - tc["null_mean"][di]),
                "excess_g_per_decision": _nan_list(tc["excess_g"][di]),
                "p": tc["p"][di].tolist(),
                "q": st.bh(tc["p"][di]).tolist(),
                "n_perm": token_perm,
                "p_token_level": _nan_list(tc["p_token_level"][di]),
                "q_token_level": _nan_list(st.bh(tc["p_token_level"][di])),
            }
        rec["balance"] = {k: v.tolist() for k, v in st.router_balance(dom.tokens).items()}
        rec["summary"] = _summary(rec, top_n)
        out[d] = rec
    return {"domains": out, "strata_tokens": [str(t) for t in tokens]}


def _nan_list(a: np.ndarray) -> list:
    return [None if not np.isfinite(x) else float(x) for x in a]


def _summary(rec: dict[str, Any], top_n: int) -> dict[str, Any]:
    """A few headline numbers per domain (every one traceable to a per-layer list above)."""
    s: dict[str, Any] = {
        "median_tvd_vs_rest": float(np.median(rec["tvd_vs_rest"])),
        f"mean_top{top_n}_overlap_with_all": float(np.mean(rec[f"top{top_n}_overlap_with_all"])),
    }
    if "usage_prompt_permutation" in rec:
        s["layers_q_lt_0.05_prompt_permutation"] = int((np.array(rec["usage_prompt_permutation"]["q"]) < 0.05).sum())
        s["median_tvd_excess_over_null"] = float(np.median(rec["usage_prompt_permutation"]["tvd_excess"]))
    s["layers_q_lt_0.05_token_level"] = int((np.array(rec["usage_token_level"]["q"]) < 0.05).sum())
    if "token_controlled" in rec:
        q = np.array(rec["token_controlled"]["q"], dtype=float)
        s["layers_q_lt_0.05_token_controlled"] = int((q < 0.05).sum())
        ex = np.array([x for x in rec["token_controlled"]["tvd_excess"] if x is not None])
        s["median_token_controlled_tvd_excess"] = float(np.median(ex)) if ex.size else None
    if "stability" in rec:
        s["mean_jaccard_vs_full"] = float(np.mean(rec["stability"]["jaccard_vs_full_mean"]))
    return s


def analyze_run(
    run_path: str | Path,
    domains: list[str] | None = None,
    segment: str = "all",
    criteria: list[str] | None = None,
    top_n: int | None = None,
    n_perm: int = 999,
    n_boot: int = 200,
    token_perm: int = 199,
    min_token_count: int = 20,
    max_tokens: int = 32,
    seed: int = 0,
    with_stats: bool = True,
    progress: bool = True,
    plots: bool = False,
    coactivation: bool = True,
) -> Path:
    """Fingerprint a run: write RUN/fingerprints/ (see docs/formats.md). Returns its path."""
    run = open_run(run_path)
    manifest = run.manifest()
    known = list(manifest.domains)
    chosen = check_domains(domains, known)
    selected = check_segment(segment)
    has_norms = manifest.has_norms
    crits = list(criteria) if criteria else default_criteria(has_norms)
    for c in crits:
        check_criterion(c)
        if c in NORM_CRITERIA and not has_norms:
            raise MoeprintError(
                f"criterion {c!r} needs expert output norms, but {run.root} recorded none "
                "(record with expert norms, or choose frequency, gate-mass, lift or reference)."
            )
    num_layers, num_experts = manifest.num_layers, manifest.num_experts
    top_n = max(1, num_experts // 2) if top_n is None else top_n
    if not 1 <= top_n <= num_experts:
        raise MoeprintError(f"top-N must be between 1 and {num_experts}; got {top_n}.")

    scan = scan_run(run, manifest, selected, progress=progress, with_coactivation=coactivation)
    summaries = read_summaries(run)

    def usage_of(domain: str | None) -> LayerUsage:
        return scan.sums.select(None if domain is None else [domain], selected)

    with atomic_directory(run.fingerprints_dir, overwrite=True, kind="fingerprints") as tmp:
        write_parquet(usage_table(scan.sums, known), tmp / "usage.parquet")
        write_parquet(coactivation_table(scan.sums, known), tmp / "coactivation.parquet")
        written: dict[str, list[str]] = {}
        for c in crits:
            ranked = compute_rankings(c, chosen, usage_of, summaries, num_layers, num_experts)
            for d, r in ranked.items():
                atomic_write_json(tmp / "rankings" / c / f"{d}.json", to_published(r), indent=None)
            written[c] = sorted(ranked)
        stats: dict[str, Any] = {
            "segment": segment,
            "segments_pooled": selected,
            "unit": "prompt",
            "n_prompts": len(scan.prompts.prompt_ids),
            "claims": CLAIMS,
            "note": "usage differences between domains mostly reflect which tokens each domain "
            "uses; cite token_controlled for specialisation.",
        }
        if with_stats:
            rng = np.random.default_rng(seed)
            stats |= _domain_stats(
                scan,
                chosen,
                selected,
                top_n,
                n_perm,
                n_boot,
                token_perm,
                min_token_count,
                max_tokens,
                run,
                manifest,
                rng,
            )
        atomic_write_json(tmp / "stats.json", stats)
        if plots and with_stats:
            from moeprint.analyze.plots import plot_specialisation

            plot_specialisation(stats, tmp / "plots")
        atomic_write_json(
            tmp / "manifest.json",
            {
                "kind": "fingerprints",
                "criteria": crits,
                "rankings": written,
                "domains": chosen,
                "segment": segment,
                "segments_pooled": selected,
                "top_n": top_n,
                "seed": seed,
                "reference_source": "published summaries (think+answer)" if summaries is not None else "traces",
                "num_layers": num_layers,
                "num_experts": num_experts,
                "top_k": manifest.top_k,
                "moe_layers": list(manifest.moe_layers or range(num_layers)),  # layer_i of a ranking = moe_layers[i]
                "n_rows": scan.n_rows,
                "coactivation": coactivation,
                "source_manifest_sha256": hashlib.sha256(run.manifest_path.read_bytes()).hexdigest(),
            },
        )
    return run.fingerprints_dir


def layer_usage_from_table(table, domain: str, segments: list[str], num_layers: int, num_experts: int) -> LayerUsage:
    """Pool usage.parquet rows of one domain over raw segments into a LayerUsage."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.and_(pc.equal(table["domain"], domain), pc.is_in(table["segment"], value_set=pa.array(segments)))
    sub = table.filter(mask)
    layer = sub["layer"].to_numpy().astype(np.intp)
    expert = sub["expert"].to_numpy().astype(np.intp)
    flat = layer * num_experts + expert

    def pool(col: str) -> np.ndarray | None:
        values = sub[col]
        if values.null_count == len(values) and len(values):
            return None
        return np.bincount(
            flat, weights=values.to_numpy(zero_copy_only=False).astype(np.float64), minlength=num_layers * num_experts
        ).reshape(num_layers, num_experts)

    n_tok = (
        int(sub.filter(pc.and_(pc.equal(sub["layer"], 0), pc.equal(sub["expert"], 0)))["layer_tokens"].to_numpy().sum())
        if len(sub)
        else 0
    )
    return LayerUsage(
        pool("tokens").astype(np.int64), pool("weight_sum"), n_tok, None, pool("norm_sum"), pool("weight_norm_sum")
    )


def load_fingerprints(run_path: str | Path) -> tuple[dict[str, Any], Callable[[str | None], LayerUsage]]:
    """(fingerprints manifest, usage_of(domain or None=all)) for other stages (plan, sweep, report)."""
    run = open_run(run_path)
    table = read_usage(run.fingerprints_dir)
    from moeprint.io.atomic import read_json

    fmanifest = read_json(run.fingerprints_dir / "manifest.json")
    segs = fmanifest["segments_pooled"]
    L, E = fmanifest["num_layers"], fmanifest["num_experts"]

    def usage_of(domain: str | None) -> LayerUsage:
        return layer_usage_from_table(table, ALL_DOMAIN if domain is None else domain, segs, L, E)

    return fmanifest, usage_of


def export_rankings(
    run_path: str | Path, criterion: str, out_dir: str | Path, domains: list[str] | None = None, fmt: str = "published"
) -> list[Path]:
    """Write OUT/<domain>.json for any criterion: the published topical_analytics rankings, or
    (`fmt="llmcompressor"`) the criterion's scores as the saliency report llm-compressor's ExpertPruner reads."""
    check_criterion(criterion)
    if fmt not in EXPORT_FORMATS:
        raise MoeprintError(f"unknown ranking format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    run = open_run(run_path)
    manifest = run.manifest()
    fmanifest, usage_of = load_fingerprints(run_path)
    chosen = check_domains(domains or fmanifest["domains"], list(manifest.domains))
    if criterion in NORM_CRITERIA and not manifest.has_norms:
        raise MoeprintError(f"criterion {criterion!r} needs expert output norms, but {run.root} recorded none.")
    out = Path(out_dir)
    if fmt == "llmcompressor":
        from moeprint.importers.llmcompressor import write_saliency_report

        if criterion in ("reference", "lift"):  # a recipe, or signed z-scores the pruner's per-layer max would distort
            raise MoeprintError(
                f"criterion {criterion!r} has no non-negative per-expert score; llm-compressor's "
                "report needs one (use reap, reap-sum, ean, frequency or gate-mass)."
            )
        pooled = usage_of(None)
        written = []
        for d in [ALL_DOMAIN, *chosen]:
            usage = pooled if d == ALL_DOMAIN else usage_of(d)
            scores = expert_scores(usage, criterion, pooled)  # (L, E)
            written.append(write_saliency_report(out / f"{d}.json", scores.tolist(), usage.tokens.tolist()))
        return written
    ranked = compute_rankings(
        criterion, chosen, usage_of, read_summaries(run), fmanifest["num_layers"], fmanifest["num_experts"]
    )
    return [atomic_write_json(out / f"{d}.json", to_published(r), indent=None) for d, r in ranked.items()]
