"""The quality benchmark's arithmetic over a sweep result (pure: a SweepResult record in, rows out).

For each domain d and size n (e.g. 50% and 25% of the experts), with increase = ppl_cut - ppl_base on
d's held-out texts:
  own[c]    the increase of criterion c selected from d's own statistics,
  other[c]  the mean increase of c selected from each other domain's statistics (the cross-domain check),
  random    the mean increase over the random seeds.
Targets (issue 5): best criterion <= 0.6 x frequency at 50% and < frequency at 25%; every criterion
below random; own below other.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

from moeprint.evaluate.results import SweepResult


def quality_rows(result: SweepResult) -> list[dict[str, Any]]:
    """One row per (domain, size, criterion) plus a `random` row per (domain, size)."""
    domains = result.eval_domains()
    own: dict[tuple, float] = {}
    other: dict[tuple, list[float]] = defaultdict(list)
    rand: dict[tuple, list[float]] = defaultdict(list)
    base: dict[str, float] = {}
    for entry in result.cuts:
        cut = entry.cut
        n = cut.n_experts
        for d in domains:
            m = entry.text(d)
            if m is None:
                continue
            inc = m.increase
            base[d] = m.ppl_base
            if cut.is_random:
                rand[(d, n)].append(inc)
            elif cut.domain == d:
                own[(d, n, cut.criterion)] = inc
            elif cut.domain in domains:
                other[(d, n, cut.criterion)].append(inc)
    rows = []
    for (d, n, c), inc in sorted(own.items()):
        rows.append(
            {
                "domain": d,
                "n_experts": n,
                "criterion": c,
                "ppl_base": base[d],
                "increase": inc,
                "other_domain_increase": mean(other[(d, n, c)]) if other[(d, n, c)] else None,
                "n_other": len(other[(d, n, c)]),
            }
        )
    for (d, n), values in sorted(rand.items()):
        rows.append(
            {
                "domain": d,
                "n_experts": n,
                "criterion": "random",
                "ppl_base": base[d],
                "increase": mean(values),
                "other_domain_increase": None,
                "n_other": 0,
                "n_seeds": len(values),
            }
        )
    return rows


def check_targets(rows: list[dict[str, Any]], half: int, quarter: int) -> list[dict[str, Any]]:
    """Every target per domain: {target, domain, passed, detail}."""
    by = defaultdict(dict)
    for r in rows:
        by[(r["domain"], r["n_experts"])][r["criterion"]] = r
    out = []
    for (d, n), crit in sorted(by.items()):
        if n not in (half, quarter):
            continue
        freq = crit.get("frequency")
        rnd = crit.get("random")
        others = {c: r for c, r in crit.items() if c not in ("frequency", "random")}
        if freq and others:
            best_c, best = min(others.items(), key=lambda kv: kv[1]["increase"])
            bound = 0.6 * freq["increase"] if n == half else freq["increase"]
            passed = best["increase"] <= bound if n == half else best["increase"] < bound
            rule = "<= 0.6 x frequency" if n == half else "< frequency"
            out.append(
                {
                    "target": f"best criterion {rule} at {n} experts",
                    "domain": d,
                    "passed": passed,
                    "detail": f"{best_c} {best['increase']:+.3f} vs frequency {freq['increase']:+.3f} "
                    f"(ratio {_ratio(best['increase'], freq['increase'])})",
                }
            )
        if rnd:
            for c, r in sorted(crit.items()):
                if c == "random":
                    continue
                out.append(
                    {
                        "target": f"{c} beats random at {n} experts",
                        "domain": d,
                        "passed": r["increase"] < rnd["increase"],
                        "detail": f"{r['increase']:+.3f} vs random {rnd['increase']:+.3f} (mean of {rnd['n_seeds']})",
                    }
                )
        for c, r in sorted(crit.items()):
            if r.get("other_domain_increase") is not None:
                out.append(
                    {
                        "target": f"{c}: own domain beats other domains at {n} experts",
                        "domain": d,
                        "passed": r["increase"] < r["other_domain_increase"],
                        "detail": f"own {r['increase']:+.3f} vs other {r['other_domain_increase']:+.3f} "
                        f"(mean of {r['n_other']} domains)",
                    }
                )
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a (frequency did not increase perplexity)"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Domain x size rows, one column per criterion: `+increase (other-domain +increase)`."""
    criteria = sorted({r["criterion"] for r in rows if r["criterion"] != "random"}) + ["random"]
    cells = defaultdict(dict)
    bases = {}
    for r in rows:
        bases[r["domain"]] = r["ppl_base"]
        text = f"{r['increase']:+.3f}"
        if r.get("other_domain_increase") is not None:
            text += f" ({r['other_domain_increase']:+.3f})"
        cells[(r["domain"], r["n_experts"])][r["criterion"]] = text
    lines = [
        "| domain | base ppl | experts kept | " + " | ".join(criteria) + " |",
        "|---|---|---|" + "---|" * len(criteria),
    ]
    for (d, n), row in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        lines.append(f"| {d} | {bases[d]:.3f} | {n} | " + " | ".join(row.get(c, "") for c in criteria) + " |")
    return "\n".join(lines)


def criterion_summary(rows: list[dict[str, Any]]) -> str:
    """One criterion across all domains (the per-domain 'best' can be a different criterion each time):
    per size, the mean over domains of increase / frequency's increase, and in how many domains it beats
    frequency, random, and its other-domain selection."""
    by = defaultdict(dict)
    for r in rows:
        by[(r["domain"], r["n_experts"])][r["criterion"]] = r
    sizes = sorted({n for _, n in by}, reverse=True)
    criteria = sorted({r["criterion"] for r in rows if r["criterion"] not in ("random",)})
    lines = [
        "| experts kept | criterion | mean increase / frequency's | beats frequency | beats random | own beats other |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        cells = [c for (d, m), c in by.items() if m == n and "frequency" in c]
        for crit in criteria:
            have = [c for c in cells if crit in c]
            if not have:
                continue
            ratios = [c[crit]["increase"] / c["frequency"]["increase"] for c in have if c["frequency"]["increase"] > 0]
            beats_f = sum(c[crit]["increase"] < c["frequency"]["increase"] for c in have)
            beats_r = sum("random" in c and c[crit]["increase"] < c["random"]["increase"] for c in have)
            own = sum(
                c[crit].get("other_domain_increase") is not None
                and c[crit]["increase"] < c[crit]["other_domain_increase"]
                for c in have
            )
            mean_ratio = f"{mean(ratios):.2f}" if ratios else "n/a"
            lines.append(
                f"| {n} | {crit} | {mean_ratio} | {beats_f}/{len(have)} | {beats_r}/{len(have)} | {own}/{len(have)} |"
            )
    return "\n".join(lines)
