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
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from moeprint import __version__
from moeprint.analyze import fingerprints, stats
from moeprint.analyze.aggregate import LayerUsage
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json
from moeprint.io.run import RunDir, open_run
from moeprint.progress import Progress
from moeprint.report import aggregate, inputs, published, tradeoff
from moeprint.report.aggregate import ALL
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


def usage_json(u: LayerUsage) -> dict:
    return {"tokens": u.tokens, "mass": u.weight_sum, "layerTokens": u.layer_tokens}


def _pooled(segments: dict[str, LayerUsage]) -> LayerUsage:
    """The segment `all`, or the sum of the segments when a fingerprint table lacks it."""
    if ALL in segments:
        return segments[ALL]
    parts = list(segments.values())
    if not parts:
        raise MoeprintError("a fingerprints domain has no segments; see docs/formats.md.")
    per_layer = sum(u.layer_tokens for u in parts)
    return LayerUsage(
        sum(u.tokens for u in parts), sum(u.weight_sum for u in parts), int(per_layer[0]), per_layer=per_layer
    )


class _RunData:
    """One run's counts, ready to be written as selection files. Opening reads the run manifest only;
    traces, prompts, fingerprints and sweep results are read when first asked for."""

    def __init__(self, run: RunDir, tag: int):
        self.run, self.tag = run, tag
        self.manifest = run.manifest()
        m = self.manifest
        self.L, self.E, self.k = m.num_layers, m.num_experts, m.top_k
        if None in (self.L, self.E, self.k):
            raise MoeprintError(f"{run.manifest_path} lacks num_layers / num_experts / top_k.")
        self.name = run.root.resolve().name
        self.has_fingerprints = fingerprints.has_fingerprints(run.fingerprints_dir)
        self.usage_source = (
            "fingerprints/usage.parquet"
            if self.has_fingerprints
            else "traces (computed at build time; run `moeprint analyze` for fingerprints)"
        )

    @cached_property
    def traces(self) -> aggregate.TraceTable:
        return aggregate.read_traces(self.run, self.L, self.k)

    @cached_property
    def _per_prompt(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts (P, S, L, E), gate mass (P, S, L, E), routed tokens (P, S)) per prompt and segment."""
        return aggregate.per_prompt_counts(self.traces, self.E)

    @property
    def counts(self) -> np.ndarray:
        return self._per_prompt[0]

    def pool(self, prompt_mask: np.ndarray) -> dict[str, LayerUsage]:
        return aggregate.pool(*self._per_prompt, prompt_mask)

    @cached_property
    def prompts(self) -> dict[str, dict]:
        return inputs.read_prompts(self.run, self.traces)

    @cached_property
    def prompt_domain(self) -> np.ndarray:
        return np.array([self.prompts[p]["domain"] for p in self.traces.prompt_ids])

    @cached_property
    def prompt_category(self) -> np.ndarray:
        return np.array([f"{self.prompts[p]['domain']}/{self.prompts[p]['category']}" for p in self.traces.prompt_ids])

    @cached_property
    def prompt_finished(self) -> np.ndarray:
        return np.array([self.prompts[p].get("finished") for p in self.traces.prompt_ids], dtype=object)

    @cached_property
    def usage(self) -> dict[str, dict[str, LayerUsage]]:
        """{domain: {segment: usage}}: the fingerprints' table, or pooled from the traces without one."""
        if self.has_fingerprints:
            usage = fingerprints.read_segment_usage(self.run.fingerprints_dir, self.L, self.E)
            if ALL not in usage:
                raise MoeprintError(
                    f"{self.run.fingerprints_dir / fingerprints.USAGE_FILE} has no pooled domain '{ALL}'; "
                    "see docs/formats.md."
                )
            return usage
        usage = {ALL: self.pool(np.ones(len(self.prompt_domain), bool))}
        for d in sorted(set(self.prompt_domain.tolist())):
            usage[d] = self.pool(self.prompt_domain == d)
        return usage

    @cached_property
    def domains(self) -> list[str]:
        return [ALL] + sorted(d for d in self.usage if d != ALL)

    @cached_property
    def categories(self) -> list[str]:
        return sorted(set(self.prompt_category.tolist()))

    @cached_property
    def analyze_stats(self) -> dict[str, dict]:
        return inputs.analyze_stats(self.run, self.L) if self.has_fingerprints else {}

    @cached_property
    def retention(self) -> dict[str, dict[str, dict[int, float]]]:
        return inputs.sweep_retention(self.run)

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
            segs = self.pool(sel)
            groups[name] = {"nPrompts": int(sel.sum()), "segments": {s: usage_json(u) for s, u in segs.items()}}
        return groups

    def tradeoff(self, domain: str, own: LayerUsage, rankings: dict) -> dict:
        reap, parts = own.weight_norm_sum, list(self.usage[domain].values())
        if (
            reap is None
            and ALL not in self.usage[domain]
            and parts
            and all(u.weight_norm_sum is not None for u in parts)
        ):
            reap = sum(u.weight_norm_sum for u in parts)  # segments without a pooled row: their sum, as for the counts
        return tradeoff.tradeoff(own.tokens, reap, rankings, self.retention.get(domain, {}))

    def domain_file(self, i: int, domain: str) -> dict:
        segs = self.usage[domain]
        all_u, own = _pooled(self.usage[ALL]), _pooled(segs)
        rankings = fingerprints.read_rankings(self.run.fingerprints_dir, domain)
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
        segs = self.pool(mask)
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
    for rd in runs:  # read every input now, so a bad one fails before the output folder is opened
        _ = (rd.domains, rd.categories, rd.analyze_stats, rd.retention)
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
