"""`moeprint analyze` and `moeprint export-rankings`: run directory in, fingerprints/ out.

Reads through runio (the only I/O), computes with aggregate/criteria/stats (pure), writes
RUN/fingerprints/ atomically with manifest.json last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moeprint.analyze.aggregate import LayerUsage
from moeprint.analyze.criteria import (
    CRITERIA,
    NORM_CRITERIA,
    REVERSED_DOMAINS,
    check_criterion,
    expert_scores,
    rank_experts,
    reference_rankings,
)
from moeprint.analyze.fingerprints import load_fingerprints, source_hash, to_published, write_fingerprints
from moeprint.analyze.runio import SEGMENT_SELECTIONS, scan_run, scan_token_strata
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json, read_parquet
from moeprint.io.manifest import RunManifest
from moeprint.io.run import RunDir, open_run
from moeprint.types import ALL

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


@dataclass(frozen=True)
class AnalyzeSettings:
    """What `analyze_run` computes. Defaults are the CLI's."""

    domains: tuple[str, ...] | None = None  # None: every domain of the run
    segment: str = "all"  # a SEGMENT_SELECTIONS key
    criteria: tuple[str, ...] | None = None  # None: every criterion the run supports
    top_n: int | None = None  # kept-set size for overlap and stability; None: E/2
    n_perm: int = 999  # prompt-label permutations
    n_boot: int = 200  # bootstrap resamples of prompts
    token_perm: int = 199  # permutations of the token-controlled test
    min_token_count: int = 20  # a stratum token occurs at least this often in two domains
    max_tokens: int = 32  # strata tokens at most
    seed: int = 0
    with_stats: bool = True
    plots: bool = False
    coactivation: bool = True

    def __post_init__(self) -> None:  # lists from callers become tuples, so the record stays hashable
        for name in ("domains", "criteria"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))


def check_domains(requested: list[str] | None, known: list[str]) -> list[str]:
    if not requested:
        return list(known)
    unknown = [d for d in requested if d not in known and d != ALL]
    if unknown:
        raise MoeprintError(f"unknown domain(s) {', '.join(unknown)}; this run has {', '.join(known)}.")
    return [d for d in requested if d != ALL]


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
        return {d: r for d, r in ranked.items() if d in domains or d == ALL or d in REVERSED_DOMAINS}
    pooled = usage_of(None)
    if pooled.n_tokens == 0:  # a ranking of no tokens would be the identity order 0..E-1 dressed up as a result
        raise MoeprintError(
            "the run has no routed tokens in the chosen segment, so nothing can be ranked; choose another --segment."
        )
    out = {ALL: rank_experts(pooled, criterion, pooled)}
    for d in domains:
        usage = usage_of(d)
        if usage.n_tokens:  # a domain without routed tokens (e.g. summaries only) gets no ranking file
            out[d] = rank_experts(usage, criterion, pooled)
    if criterion == "reference":
        for target, source in REVERSED_DOMAINS.items():
            if source in out:
                out[target] = [r[::-1] for r in out[source]]
    return out


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
    settings: AnalyzeSettings,
    run: RunDir,
    manifest: RunManifest,
) -> dict[str, Any]:
    from moeprint.analyze import stats as st  # scipy.stats takes seconds to import; only analyze needs it

    rng = np.random.default_rng(settings.seed)
    n_perm, n_boot, token_perm = settings.n_perm, settings.n_boot, settings.token_perm
    sums, prompts = scan.sums, scan.prompts
    all_domains = list(sums.domains)
    pooled = sums.select(None, selected)
    labels = np.array([all_domains.index(d) for d in prompts.prompt_domains], dtype=np.intp)
    perm = st.prompt_permutation(prompts.counts, labels, len(all_domains), n_perm, rng) if len(labels) else None

    tokens = st.choose_strata(scan.token_domain_counts, settings.min_token_count, settings.max_tokens)
    tc = None
    if tokens and len(labels):
        pair_prompt, pair_token, pair_counts = scan_token_strata(run, manifest, selected, tokens, prompts.prompt_ids)
        tc = st.token_controlled(
            pair_prompt, pair_token, pair_counts, labels, len(tokens), len(all_domains), token_perm, rng
        )

    out: dict[str, Any] = {ALL: {k: v.tolist() for k, v in st.router_balance(pooled.tokens).items()}}
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


def _check_settings(
    run: RunDir, manifest: RunManifest, settings: AnalyzeSettings
) -> tuple[list[str], list[str], list[str], int]:
    """(domains, raw segments, criteria, top_n) of `settings` against the run, or one clear error."""
    chosen = check_domains(list(settings.domains) if settings.domains else None, list(manifest.domains))
    selected = check_segment(settings.segment)
    has_norms = manifest.has_norms
    crits = list(settings.criteria) if settings.criteria else default_criteria(has_norms)
    for c in crits:
        check_criterion(c)
        if c in NORM_CRITERIA and not has_norms:
            raise MoeprintError(
                f"criterion {c!r} needs expert output norms, but {run.root} recorded none "
                "(record with expert norms, or choose frequency, gate-mass, lift or reference)."
            )
    num_experts = manifest.num_experts
    top_n = max(1, num_experts // 2) if settings.top_n is None else settings.top_n
    if not 1 <= top_n <= num_experts:
        raise MoeprintError(f"top-N must be between 1 and {num_experts}; got {top_n}.")
    return chosen, selected, crits, top_n


def analyze_run(run_path: str | Path, settings: AnalyzeSettings = AnalyzeSettings(), progress: bool = True) -> Path:
    """Fingerprint a run: write RUN/fingerprints/ (see docs/formats.md). Returns its path."""
    run = open_run(run_path)
    manifest = run.manifest()
    known = list(manifest.domains)
    chosen, selected, crits, top_n = _check_settings(run, manifest, settings)
    num_layers, num_experts = manifest.num_layers, manifest.num_experts

    scan = scan_run(run, manifest, selected, progress=progress, with_coactivation=settings.coactivation)
    summaries = read_summaries(run)

    def usage_of(domain: str | None) -> LayerUsage:
        return scan.sums.select(None if domain is None else [domain], selected)

    rankings = {c: compute_rankings(c, chosen, usage_of, summaries, num_layers, num_experts) for c in crits}
    stats: dict[str, Any] = {
        "segment": settings.segment,
        "segments_pooled": selected,
        "unit": "prompt",
        "n_prompts": len(scan.prompts.prompt_ids),
        "claims": CLAIMS,
        "note": "usage differences between domains mostly reflect which tokens each domain "
        "uses; cite token_controlled for specialisation.",
    }
    if settings.with_stats:
        stats |= _domain_stats(scan, chosen, selected, top_n, settings, run, manifest)
    extras = []
    if settings.plots and settings.with_stats:
        from moeprint.analyze.plots import plot_specialisation

        extras.append(lambda target: plot_specialisation(stats, target / "plots"))
    fmanifest = {
        "criteria": crits,
        "domains": chosen,
        "segment": settings.segment,
        "segments_pooled": selected,
        "top_n": top_n,
        "seed": settings.seed,
        "reference_source": "published summaries (think+answer)" if summaries is not None else "traces",
        "num_layers": num_layers,
        "num_experts": num_experts,
        "top_k": manifest.top_k,
        "moe_layers": list(manifest.moe_layers or range(num_layers)),  # layer_i of a ranking = moe_layers[i]
        "n_rows": scan.n_rows,
        "coactivation": settings.coactivation,
        "source_manifest_sha256": source_hash(run),
    }
    with atomic_directory(run.fingerprints_dir, overwrite=True, kind="fingerprints") as tmp:
        write_fingerprints(tmp, scan.sums, known, rankings, stats, fmanifest, extras)
    return run.fingerprints_dir


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
        for d in [ALL, *chosen]:
            usage = pooled if d == ALL else usage_of(d)
            scores = expert_scores(usage, criterion, pooled)  # (L, E)
            written.append(write_saliency_report(out / f"{d}.json", scores.tolist(), usage.tokens.tolist()))
        return written
    ranked = compute_rankings(
        criterion, chosen, usage_of, read_summaries(run), fmanifest["num_layers"], fmanifest["num_experts"]
    )
    return [atomic_write_json(out / f"{d}.json", to_published(r), indent=None) for d, r in ranked.items()]
