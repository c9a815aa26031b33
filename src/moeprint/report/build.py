"""`moeprint site`: a static, offline explorer + comparison site built from a run directory.

Output (written under a temp name, renamed when complete; manifest.json last):
    index.html, comparison.html, assets/*.css|js       (bundled, no network)
    data/meta.js                                        run facts, domains, selections, file names
    data/usage-R-I.js                                   one domain or category: per segment (L, E) counts, gate mass,
                                                        tests vs the rest of the run, stability, rankings
    data/prompts.js                                     the prompt list for the token view
    data/prompt-I.js                                    one prompt's tokens and their exact routing
    data/plans.js                                       prune plans and evaluate results found in the run
Data files are scripts calling `moeprint.register(key, data)`, because browsers block fetch() of
local files opened from file://, while <script src> works everywhere.
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from moeprint import __version__
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json, read_json
from moeprint.io.run import RunDir, open_run
from moeprint.progress import Progress
from moeprint.report import aggregate, inputs, published, stats, tradeoff
from moeprint.report.aggregate import ALL, Usage
from moeprint.report.tokens import prompt_payload, token_strings

PAGES = ("index.html", "comparison.html")
ASSETS = ("style.css", "common.js", "stats.js", "heatmap.js", "explorer.js", "tokens.js", "comparison.js")


def clean(obj: Any, digits: int = 7) -> Any:
    """JSON-safe: numpy to Python, floats to `digits` significant digits (p-values stay tiny), NaN/inf to null."""
    if isinstance(obj, dict):
        return {str(k): clean(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist(), digits)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return float(f"{f:.{digits}g}") if np.isfinite(f) else None
    return obj


def write_data(path: Path, key: str, obj: Any) -> int:
    """A data script: `moeprint.register("key", {...});` (ASCII-only JSON, so any token text is inert)."""
    body = json.dumps(clean(obj), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    text = f"moeprint.register({json.dumps(key)},{body});\n"
    path.write_text(text, encoding="ascii")
    return len(text)


def usage_json(u: Usage) -> dict:
    return {"tokens": u.tokens, "mass": u.weight_sum, "layerTokens": u.layer_tokens}


def _pooled(segments: dict[str, Usage]) -> Usage:
    """The segment `all`, or the sum of the segments when a fingerprint table lacks it."""
    if ALL in segments:
        return segments[ALL]
    parts = list(segments.values())
    if not parts:
        raise MoeprintError("a fingerprints domain has no segments; see docs/formats.md.")
    return Usage(sum(u.tokens for u in parts), sum(u.weight_sum for u in parts), sum(u.layer_tokens for u in parts))


def _read_rankings(run: RunDir, domain: str) -> dict[str, list[list[int]]]:
    out = {}
    root = run.fingerprints_dir / "rankings"
    if not root.is_dir():
        return out
    for crit_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        f = crit_dir / f"{domain}.json"
        if f.exists() or Path(str(f) + ".gz").exists():
            data = read_json(f)
            try:
                out[crit_dir.name] = [list(map(int, data[f"layer_{i}"])) for i in range(len(data))]
            except (KeyError, TypeError, ValueError):
                raise MoeprintError(f"{f} is not a ranking file ({{'layer_0': [ids], ...}}).") from None
    return out


class _RunData:
    """One run's counts, ready to be written as selection files."""

    def __init__(self, run: RunDir, tag: int):
        self.run, self.tag = run, tag
        self.manifest = run.manifest()
        self.L, self.E, self.k = self.manifest.num_layers, self.manifest.num_experts, self.manifest.top_k
        self.traces = aggregate.read_traces(run, self.L, self.k)
        self.counts, self.mass, self.routed_tokens = aggregate.per_prompt_counts(self.traces, self.E)
        self.prompts = inputs.read_prompts(run, self.traces)
        cats = [f"{self.prompts[p]['domain']}/{self.prompts[p]['category']}" for p in self.traces.prompt_ids]
        self.prompt_domain = np.array([self.prompts[p]["domain"] for p in self.traces.prompt_ids])
        self.prompt_category = np.array(cats)
        fp = run.fingerprints_dir / "usage.parquet"
        if (run.fingerprints_dir / "manifest.json").exists() and fp.exists():
            self.usage = aggregate.read_fingerprint_usage(fp, self.L, self.E)
            self.usage_source = "fingerprints/usage.parquet"
        else:
            self.usage = {
                ALL: aggregate.pool(self.counts, self.mass, self.routed_tokens, np.ones(len(self.prompt_domain), bool))
            }
            for d in sorted(set(self.prompt_domain.tolist())):
                self.usage[d] = aggregate.pool(self.counts, self.mass, self.routed_tokens, self.prompt_domain == d)
            self.usage_source = "traces (computed at build time; run `moeprint analyze` for fingerprints)"
        if ALL not in self.usage:
            raise MoeprintError(f"{fp} has no pooled domain '{ALL}'; see docs/formats.md.")
        self.domains = [ALL] + sorted(d for d in self.usage if d != ALL)
        self.categories = sorted(set(self.prompt_category.tolist()))
        self.name = run.root.resolve().name
        self.analyze_stats = inputs.analyze_stats(run, self.L) if self.usage_source.startswith("fingerprints") else {}
        self.prompt_finished = np.array([self.prompts[p].get("finished") for p in self.traces.prompt_ids], dtype=object)
        self.retention = inputs.sweep_retention(run)

    def finished_groups(self, domain: str) -> dict | None:
        """The domain's sums over finished and over unfinished generations (the page adds or picks them);
        None when prompts.parquet does not say which generations finished."""
        known = np.array([f is not None for f in self.prompt_finished], bool)
        if not known.any():
            return None
        mask = np.ones(len(self.prompt_domain), bool) if domain == ALL else self.prompt_domain == domain
        finished = known & np.array([f is True for f in self.prompt_finished], bool)
        groups = {}
        for name, sel in (("finished", mask & finished), ("unfinished", mask & known & ~finished)):
            segs = aggregate.pool(self.counts, self.mass, self.routed_tokens, sel)
            groups[name] = {"nPrompts": int(sel.sum()), "segments": {s: usage_json(u) for s, u in segs.items()}}
        return groups

    def tradeoff(self, domain: str, own: Usage, rankings: dict) -> dict:
        reap, parts = own.reap, list(self.usage[domain].values())
        if reap is None and ALL not in self.usage[domain] and parts and all(u.reap is not None for u in parts):
            reap = sum(u.reap for u in parts)  # segments without a pooled row: their sum, as for the counts
        return tradeoff.tradeoff(own.tokens, reap, rankings, self.retention.get(domain, {}))

    def domain_file(self, i: int, domain: str) -> dict:
        segs = self.usage[domain]
        all_u, own = _pooled(self.usage[ALL]), _pooled(segs)
        rankings = _read_rankings(self.run, domain)
        result = {
            "kind": "domain",
            "name": domain,
            "source": self.usage_source,
            "segments": {s: usage_json(u) for s, u in {**segs, ALL: own}.items()},
            "entropy": stats.usage_entropy_bits(own.tokens),
            "rankings": rankings,
            "analyzeStats": self.analyze_stats.get(domain),
            "routerEntropy": self.router_entropy(domain),
            "byFinished": self.finished_groups(domain),
            "tradeoff": self.tradeoff(domain, own, rankings),
        }
        if domain != ALL:
            rest = all_u.tokens - own.tokens  # (L, E): the rest of the run
            result["vsRest"] = stats.two_sample_layer_tests(own.tokens, rest)
            mask = self.prompt_domain == domain
            if not mask.any():  # fingerprints name a domain the traces do not hold
                return result
            per_prompt = self.counts[mask].sum(axis=1)  # (P_d, L, E)
            n_keep = max(1, self.E // 2)
            result["stability"] = {
                "nKeep": n_keep,
                "jaccard": stats.split_half_stability(per_prompt, n_keep),
                "nPrompts": int(mask.sum()),
            }
        return result

    def router_entropy(self, domain: str) -> list[float] | None:
        """Per layer, mean over the domain's tokens of the router's softmax entropy (bits); None without logits."""
        ent = self.traces.router_entropy
        if ent is None:
            return None
        rows = np.ones(len(ent), bool) if domain == ALL else self.prompt_domain[self.traces.row_prompt] == domain
        rows &= np.isfinite(ent[:, 0])
        return ent[rows].mean(axis=0).tolist() if rows.any() else None

    def category_file(self, category: str) -> dict:
        """Categories are `domain/category` of prompts.parquet, pooled from the traces."""
        mask = self.prompt_category == category
        segs = aggregate.pool(self.counts, self.mass, self.routed_tokens, mask)
        return {
            "kind": "category",
            "name": category,
            "source": "traces",
            "segments": {s: usage_json(u) for s, u in segs.items()},
        }


class _PublishedData:
    """The published summaries of an imported run (RUN/published/summaries.parquet) as a second source."""

    def __init__(self, main: _RunData, path: Path):
        self.run, self.tag, self.manifest = main.run, "pub", replace(main.manifest, kind="published")
        self.usage, self.category_usage = published.read_published(path, main.L, main.E)
        self.domains = [ALL] + sorted(d for d in self.usage if d != ALL)
        self.categories = sorted(self.category_usage)
        self.name = "published summaries"
        self.usage_source = (
            "published/summaries.parquet: every published prompt; counts = count_frequency x "
            "num_tokens x sample_count (not integers)"
        )

    def domain_file(self, i: int, domain: str) -> dict:
        own = self.usage[domain][ALL]
        result = {
            "kind": "domain",
            "name": domain,
            "source": self.usage_source,
            "segments": {s: usage_json(u) for s, u in self.usage[domain].items()},
            "entropy": stats.usage_entropy_bits(own.tokens),
            "rankings": {},
        }
        if domain != ALL:
            result["vsRest"] = stats.two_sample_layer_tests(own.tokens, self.usage[ALL][ALL].tokens - own.tokens)
        return result

    def category_file(self, category: str) -> dict:
        return {
            "kind": "category",
            "name": category,
            "source": self.usage_source,
            "segments": {s: usage_json(u) for s, u in self.category_usage[category].items()},
        }


def build_site(run_dir: str | Path, out: str | Path | None = None, compare: tuple[str, ...] = ()) -> Path:
    """Build the static site for `run_dir` (plus other runs to compare against); returns the output dir."""
    run = open_run(run_dir)
    out = Path(out) if out else run.site_dir
    runs = [_RunData(run, 0)] + [_RunData(open_run(r), j + 1) for j, r in enumerate(compare)]
    main = runs[0]
    for other in runs[1:]:
        if (other.L, other.E) != (main.L, main.E):
            raise MoeprintError(
                f"run {other.run.root} has {other.L} x {other.E} experts, {main.run.root} has {main.L} x {main.E}; "
                "only runs of the same model shape can be compared."
            )
    sources: list = list(runs)
    summaries = run.root / "published" / "summaries.parquet"
    if summaries.exists():
        sources.insert(1, _PublishedData(main, summaries))

    with atomic_directory(out, overwrite=True, kind="site") as tmp:
        data = tmp / "data"
        data.mkdir()
        asset_dir = tmp / "assets"
        asset_dir.mkdir()
        pkg = resources.files("moeprint.report") / "assets"
        for name in ASSETS:
            (asset_dir / name).write_bytes((pkg / name).read_bytes())
        for name in PAGES:
            (tmp / name).write_bytes((pkg / name).read_bytes())

        run_index = []
        with Progress(transient=True) as progress:
            for rd in sources:
                entry = {
                    "name": rd.name,
                    "kind": rd.manifest.kind,
                    "model": inputs.model_label(rd.manifest.model.name),
                    "usageSource": rd.usage_source,
                    "domains": [],
                    "categories": [],
                }
                cats = rd.categories
                advance = progress.task(f"site: aggregates of {rd.name}", len(rd.domains) + len(cats))
                for i, d in enumerate(rd.domains):
                    fname = f"usage-{rd.tag}-d{i}.js"
                    write_data(data / fname, fname, rd.domain_file(i, d))
                    entry["domains"].append({"name": d, "file": fname, "segments": sorted(rd.usage[d])})
                    advance()
                for i, c in enumerate(cats):
                    fname = f"usage-{rd.tag}-c{i}.js"
                    write_data(data / fname, fname, rd.category_file(c))
                    entry["categories"].append({"name": c, "file": fname})
                    advance()
                run_index.append(entry)

            prompt_rows = _write_prompts(main, data, progress)
        write_data(
            data / "prompts.js",
            "prompts.js",
            {"columns": list(prompt_rows[0]) if prompt_rows else [], "rows": [list(r.values()) for r in prompt_rows]},
        )
        write_data(data / "plans.js", "plans.js", inputs.plans_and_evals(main.run))
        m = main.manifest
        meta = {
            "version": __version__,
            "run": {
                "name": main.name,
                "kind": m.kind,
                "model": inputs.model_label(m.model.name),
                "architecture": m.model.architecture,
                "numLayers": main.L,
                "numExperts": main.E,
                "topK": main.k,
                "nPrompts": len(main.traces.prompt_ids),
                "nTokens": int(main.traces.routed.sum()),
                "usageSource": main.usage_source,
            },
            "runs": run_index,  # [0] this run's traces, then published summaries / --compare runs
        }
        write_data(data / "meta.js", "meta.js", meta)
        manifest_path = atomic_write_json(
            tmp / "manifest.json",
            {
                "kind": "site",
                "moeprint": __version__,
                "run": str(main.run.root.resolve()),
                "compare": [str(r.run.root.resolve()) for r in runs[1:]],
            },
        )
        manifest_path.chmod(0o644)  # a static host must be able to read it
    return out


def _write_prompts(rd: _RunData, data: Path, progress: Progress) -> list[dict]:
    tr = rd.traces
    strings = token_strings(tr, rd.manifest)
    starts = np.searchsorted(tr.row_prompt, np.arange(len(tr.prompt_ids) + 1))
    rows = []
    advance = progress.task("site: token files", len(tr.prompt_ids))
    for i, pid in enumerate(tr.prompt_ids):
        info = rd.prompts[pid]
        sl = slice(int(starts[i]), int(starts[i + 1]))
        payload = prompt_payload(tr, sl, strings, {"promptId": pid, **info}, rd.E)
        if "p" not in payload["seg"] and info.get("prompt_text"):
            payload["promptText"] = info["prompt_text"]  # imported runs: the prompt has no routed rows
        payload.pop("prompt_text", None)
        fname = f"prompt-{i}.js"
        write_data(data / fname, fname, payload)
        rows.append(
            {
                "file": fname,
                "promptId": pid,
                "domain": info["domain"],
                "source": info["source"],
                "category": info["category"],
                "finished": info["finished"],
                "nTokens": sl.stop - sl.start,
                "nRouted": int(tr.routed[sl].sum()),
            }
        )
        advance()
    return rows
