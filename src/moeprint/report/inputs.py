"""The run's other inputs to the site: prompt metadata, prune plans and evaluate results."""

from __future__ import annotations

import re
from numbers import Number
from pathlib import Path
from typing import Any

from moeprint.analyze import fingerprints
from moeprint.errors import MoeprintError
from moeprint.evaluate import results
from moeprint.evaluate.results import EVALUATE_SCHEMA, SWEEP_SCHEMA, SweepResult
from moeprint.io.atomic import read_json
from moeprint.io.run import RunDir, read_prompts_table
from moeprint.report.aggregate import TraceTable
from moeprint.select.plan import load_plan


def read_prompts(run: RunDir, tr: TraceTable) -> dict[str, dict]:
    """prompt_id -> {domain, source, category, finished, prompt_text}; prompts missing from
    prompts.parquet (or no prompts.parquet at all) get what the traces know."""
    out: dict[str, dict] = {}
    t = read_prompts_table(run)
    if t is not None:
        for row in t.to_pylist():
            text = row.get("rendered") or row.get("text") or row.get("messages") or ""
            out[str(row["prompt_id"])] = {
                "domain": row.get("domain") or "",
                "source": row.get("source") or "",
                "category": row.get("category") or "",
                "finished": row.get("finished"),
                "prompt_text": text,
            }
    for pid in tr.prompt_ids:
        if pid not in out:
            out[pid] = {
                "domain": tr.domain_of_prompt[pid],
                "source": "",
                "category": "",
                "finished": None,
                "prompt_text": "",
            }
        else:
            out[pid]["domain"] = out[pid]["domain"] or tr.domain_of_prompt[pid]
    return out


def _numeric_leaves(obj: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(obj, bool):
        return [(path, float(obj))]
    if isinstance(obj, Number):
        return [(path, float(obj))]
    if isinstance(obj, dict):
        return [leaf for k, v in obj.items() for leaf in _numeric_leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list):
        return [leaf for i, v in enumerate(obj) for leaf in _numeric_leaves(v, f"{path}[{i}]")]
    return []


def _curves(obj: Any, name: str) -> list[dict]:
    """Lists of records with a numeric `n_experts` and other numeric fields: one retention curve per field."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _curves(v, f"{name}.{k}")
    elif (
        isinstance(obj, list)
        and obj
        and all(isinstance(r, dict) and isinstance(r.get("n_experts"), Number) for r in obj)
    ):
        fields = sorted(
            {k for r in obj for k, v in r.items() if isinstance(v, Number) and not isinstance(v, bool)} - {"n_experts"}
        )
        for f in fields:
            pts = sorted((r["n_experts"], r[f]) for r in obj if isinstance(r.get(f), Number))
            found.append({"name": f"{name}: {f}", "x": [p[0] for p in pts], "y": [p[1] for p in pts]})
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _curves(v, f"{name}[{i}]")
    return found


def _sweep_charts(result: SweepResult, name: str) -> list[dict]:
    """A sweep's results: per plan domain, in-domain perplexity ratio and KL vs experts kept,
    one line per criterion (the domain's own selection) and random (mean over seeds)."""
    charts = []
    for metric, label in (("ppl_ratio", "in-domain perplexity / base"), ("kl", "in-domain KL to base (nats/token)")):
        for domain in result.domains:
            series: dict[str, dict[int, list[float]]] = {}
            for entry in result.cuts:
                cut, values = entry.cut, entry.text(domain)
                value = getattr(values, metric) if values is not None else None
                if cut.selects_for(domain) and value is not None and cut.n_experts is not None:
                    series.setdefault(str(cut.criterion), {}).setdefault(int(cut.n_experts), []).append(float(value))
            if series:
                charts.append(
                    {
                        "title": f"{name}: {domain}, {label}",
                        "series": [
                            {
                                "name": crit + (" (mean of seeds)" if crit == "random" else ""),
                                "x": sorted(pts),
                                "y": [sum(pts[n]) / len(pts[n]) for n in sorted(pts)],
                            }
                            for crit, pts in sorted(series.items())
                        ],
                    }
                )
    return charts


EVAL_COLUMNS = [
    ("text.in_domain.ppl_ratio", "in-domain ppl ratio"),
    ("text.off_domain.ppl_ratio", "off-domain ppl ratio"),
    ("text.in_domain.kl", "in-domain KL"),
    ("text.in_domain.top1_agreement", "top-1 agreement"),
    ("mc.in_domain.acc_cut", "MC accuracy (cut)"),
    ("mc.in_domain.acc_base", "MC accuracy (base)"),
    ("generation.all.finished_rate_cut", "finished rate (cut)"),
    ("generation.all.looping_rate_cut", "looping rate (cut)"),
]


def plans_and_evals(run: RunDir) -> dict:
    """Plans (kept experts per layer), evaluate results (`moeprint.evaluate/1` files as a table, `moeprint.sweep/1`
    results as retention charts) and, for any other JSON under evals/, every number it holds plus curves over
    `n_experts` when it has lists of such records."""
    plans = []
    if run.plans_dir.is_dir():
        for p in sorted(run.plans_dir.glob("*.json")):
            try:
                plan = load_plan(p)
            except MoeprintError:
                continue  # not a plan (plans/ may hold other notes); the site shows plans only
            plans.append(
                {
                    "file": p.name,
                    "domain": plan.domain,
                    "criterion": plan.criterion,
                    "nExperts": plan.n_experts,
                    "kept": [list(k) for k in plan.kept],
                }
            )
    evals, charts, cuts = [], [], []
    if run.evals_dir.is_dir():
        for p in sorted(run.evals_dir.rglob("*.json")):
            if p.name == "manifest.json":
                continue
            d = read_json(p)
            name = str(p.relative_to(run.evals_dir))
            known = isinstance(d, dict) and d.get("schema") in (EVALUATE_SCHEMA, SWEEP_SCHEMA)
            kind = results.result_kind(d) if known else None
            if kind == "sweep":
                charts += _sweep_charts(results.SweepResult.from_doc(d), name)
            elif kind == "evaluate":
                result = results.parse_evaluate(d)
                cut = result.cut
                cuts.append(
                    [name, cut.name, cut.domain, cut.criterion, cut.raw.get("n_experts")]
                    + [result.result.value(path) for path, _ in EVAL_COLUMNS]
                )
            else:
                evals += [[name, path, v] for path, v in _numeric_leaves(d)]
                charts += [{"title": c["name"], "series": [c]} for c in _curves(d, p.stem)]
    cut_columns = ["file", "cut", "domain", "criterion", "experts kept"] + [label for _, label in EVAL_COLUMNS]
    return {"plans": plans, "evals": evals, "charts": charts, "cuts": {"columns": cut_columns, "rows": cuts}}


def analyze_stats(run: RunDir, num_layers: int) -> dict[str, dict]:
    """fingerprints/stats.json per domain, as a per-layer table: every list of `num_layers` numbers becomes a
    column named by its key path (e.g. `usage_prompt_permutation.q`), every other number a summary entry.
    Generic on purpose: the page shows whatever tests the analyze stage wrote, under their own names."""
    data = fingerprints.read_stats(run.fingerprints_dir)
    domains = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(domains, dict):
        return {}
    out = {}
    for domain, rec in domains.items():
        columns: dict[str, list] = {}
        summary: dict[str, float] = {}

        def walk(obj: Any, prefix: str) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(v, f"{prefix}.{k}" if prefix else str(k))
            elif (
                isinstance(obj, list)
                and len(obj) == num_layers
                and all(v is None or (isinstance(v, Number) and not isinstance(v, bool)) for v in obj)
            ):
                columns[prefix] = obj
            elif isinstance(obj, Number) and not isinstance(obj, bool):
                summary[prefix] = obj

        walk(rec, "")
        if columns or summary:
            out[str(domain)] = {
                "columns": list(columns),
                "rows": [[columns[c][layer] for c in columns] for layer in range(num_layers)],
                "summary": summary,
            }
    return out


def sweep_retention(run: RunDir) -> dict[str, dict[str, dict[int, float]]]:
    """In-domain perplexity retention per (plan domain, criterion, experts kept) of every sweep under evals/."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    if not run.evals_dir.is_dir():
        return out
    for p in sorted(run.evals_dir.rglob(results.SWEEP_RESULTS)):
        d = read_json(p)
        if isinstance(d, dict) and d.get("schema") == SWEEP_SCHEMA:
            for domain, crits in results.SweepResult.from_doc(d).ppl_retention().items():
                for criterion, points in crits.items():
                    out.setdefault(domain, {}).setdefault(criterion, {}).update(points)
    return out


def model_label(model: Any) -> str | None:
    """A run's model as pages show it: a hub id as it is, a local folder by its name only (pages are shared;
    a machine's paths mean nothing to their readers)."""
    if model is None:
        return None
    text = str(model)
    if "/" not in text and "\\" not in text:
        return text
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) and not Path(text).exists():
        return text  # owner/name: a hub id
    return f"{Path(text).name} (local folder)"
