"""Small synthetic run directories in the docs/formats.md layout, for the site tests.

Two domains whose routing differs on purpose (math prefers experts 0-3, law experts 4-7), hostile
token strings, one prompt whose prompt rows carry no routing (as in imported traces), and
fingerprints computed here with plain Python loops (independent of moeprint.report.aggregate).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moeprint.analyze.fingerprints import USAGE_SCHEMA  # the file layout only; the numbers are computed here
from moeprint.io.run import PROMPTS_SCHEMA, trace_schema
from moeprint.types import PrunePlan

L, E, K = 3, 8, 2
SCRIPT_TOKEN = "<script>window.__pwned=1</script>"
IMG_TOKEN = '<img src=x onerror="window.__pwned=2">'
PROMPTS = [  # prompt_id, domain, source, category, finished
    ("p0", "math", "mmlu", "algebra", True),
    ("p1", "math", "mmlu", "geometry", False),
    ("p2", "math", "gpqa", "algebra", True),
    ("p3", "law", "mmlu", "contracts", True),
    ("p4", "law", "mmlu", "torts", False),
    ("p5", "law", "sorry", "torts", True),
]
WORDS = ["The", " answer", " is", "\n", " x", "=", "4", " é", " law", " ∑", SCRIPT_TOKEN, IMG_TOKEN, "&amp;", " "]


def _route(rng, domain: str) -> tuple[list[int], list[float]]:
    preferred = [0, 1, 2, 3] if domain == "math" else [4, 5, 6, 7]
    ids, weights = [], []
    for _layer in range(L):
        pool = preferred if rng.random() < 0.8 else list(range(E))
        chosen = rng.choice(pool, size=K, replace=False)
        logits = np.sort(rng.normal(size=K))[::-1]
        w = np.exp(logits) / np.exp(logits).sum()
        ids += [int(c) for c in chosen]
        weights += [float(np.float32(x)) for x in w]
    return ids, weights


def make_run(
    root: Path, seed: int = 0, with_fingerprints: bool = True, name: str = "synthetic", unrouted_prompt: bool = True
) -> Path:
    """`unrouted_prompt`: p3's prompt rows carry no routing, as in imported traces (the analyze stage needs
    every row routed, so runs that go through it set this to False)."""
    rng = np.random.default_rng(seed)
    run = root / name
    (run / "traces").mkdir(parents=True)
    rows = []
    for n, (pid, domain, _src, _cat, _fin) in enumerate(PROMPTS):
        n_prompt, n_think, n_answer = 4, 6, 5
        segs = ["prompt"] * n_prompt + ["think"] * n_think + ["answer"] * n_answer
        for pos, seg in enumerate(segs):
            tok = WORDS[(pos + 3 * n) % len(WORDS)]
            if unrouted_prompt and pid == "p3" and seg == "prompt":
                ids, weights = [], []  # imported traces: prompt rows without routing
            else:
                ids, weights = _route(rng, domain)
            rows.append(
                {
                    "prompt_id": pid,
                    "domain": domain,
                    "position": pos,
                    "token_id": -1,
                    "is_generated": seg != "prompt",
                    "segment": seg,
                    "ids": ids,
                    "weights": weights,
                    "token": tok,
                }
            )
    schema = trace_schema(with_token_text=True)
    half = len(rows) // 2
    pq.write_table(pa.Table.from_pylist(rows[:half], schema=schema), run / "traces" / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:], schema=schema), run / "traces" / "part-00001.parquet")
    prompts = [
        {
            "prompt_id": pid,
            "domain": d,
            "source": s,
            "category": c,
            "text": f"Question {pid}: <b>bold?</b>",
            "messages": None,
            "rendered": f"<|start|>user<|message|>Question {pid}: <b>bold?</b><|end|>",
            "completion": "...",
            "finished": f,
            "n_prompt_tokens": 4,
            "n_generated_tokens": 11,
        }
        for pid, d, s, c, f in PROMPTS
    ]
    pq.write_table(pa.Table.from_pylist(prompts, schema=PROMPTS_SCHEMA), run / "prompts.parquet")
    if with_fingerprints:
        write_fingerprints(run, rows)
    (run / "plans").mkdir()
    plan = PrunePlan(
        "synthetic/moe", "GptOssForCausalLM", "law", "frequency", 4, K, ((4, 5, 6, 7), (0, 4, 5, 6), (1, 4, 5, 7))
    )
    (run / "plans" / "law-4.json").write_text(json.dumps(plan.to_json()))
    (run / "evals").mkdir()
    retention = {"domain": "law", "sweep": [{"n_experts": n, "ppl": 10.0 / n, "kl": 1.0 / n} for n in (2, 4, 8)]}
    (run / "evals" / "retention.json").write_text(json.dumps(retention))
    # the evaluate stage's documented result shapes (docs/evaluate.md): one evaluated cut, one sweep
    text = {
        "per_domain": {"law": {"ppl_ratio": 1.25, "kl": 0.1}},
        "in_domain": {"ppl_ratio": 1.25, "kl": 0.1, "top1_agreement": 0.9},
        "off_domain": {"ppl_ratio": 1.5},
    }
    evaluate = {
        "schema": "moeprint.evaluate/1",
        "cut": {"name": "law-4", "kind": "plan", "domain": "law", "criterion": "frequency", "n_experts": 4},
        "text": text,
        "mc": None,
        "generation": None,
    }
    (run / "evals" / "law-4.json").write_text(json.dumps(evaluate))
    cuts = [
        {
            "cut": {"domain": "law", "criterion": "frequency", "n_experts": n, "seed": None},
            "text": {"per_domain": {"law": {"ppl_ratio": 1 + 1 / n, "kl": 0.5 / n}}},
        }
        for n in (2, 4)
    ]
    cuts += [
        {
            "cut": {"domain": "", "criterion": "random", "n_experts": n, "seed": seed},
            "text": {"per_domain": {"law": {"ppl_ratio": 2 + seed + 1 / n, "kl": 1.0}}},
        }
        for n in (2, 4)
        for seed in (0, 1)
    ]
    (run / "evals" / "sweep").mkdir()
    sweep = {"schema": "moeprint.sweep/1", "domains": ["law"], "sizes": [2, 4], "criteria": ["frequency"], "cuts": cuts}
    (run / "evals" / "sweep" / "results.json").write_text(json.dumps(sweep))
    (run / "evals" / "sweep" / "manifest.json").write_text("{}")
    manifest = {
        "kind": "imported",
        "model": "synthetic/moe",
        "model_sha256": None,
        "architecture": "GptOssForCausalLM",
        "num_layers": L,
        "num_experts": E,
        "top_k": K,
        "domains": ["law", "math"],
        "n_prompts": len(PROMPTS),
        "n_tokens": len(rows),
        "has_logits": False,
        "has_norms": False,
        "has_token_ids": False,
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def plain_usage(rows: list[dict]) -> dict:
    """{(domain, segment): (tokens[l][e], weight_sum[l][e], layer_tokens)} by plain loops."""
    out = defaultdict(lambda: ([[0] * E for _ in range(L)], [[0.0] * E for _ in range(L)], [0]))
    for r in rows:
        if not r["ids"]:
            continue
        for d in ("all", r["domain"]):
            for s in ("all", r["segment"]):
                tokens, mass, n = out[(d, s)]
                n[0] += 1
                for layer in range(L):
                    for j in range(K):
                        e = r["ids"][layer * K + j]
                        tokens[layer][e] += 1
                        mass[layer][e] += r["weights"][layer * K + j]
    return out


def write_fingerprints(run: Path, rows: list[dict]) -> None:
    fp = run / "fingerprints"
    fp.mkdir()
    usage = plain_usage(rows)
    table = []
    for (d, s), (tokens, mass, n) in sorted(usage.items()):
        for layer in range(L):
            for e in range(E):
                table.append(
                    {
                        "domain": d,
                        "segment": s,
                        "layer": layer,
                        "expert": e,
                        "tokens": tokens[layer][e],
                        "weight_sum": mass[layer][e],
                        "weight_max": 1.0,
                        "norm_sum": None,
                        "weight_norm_sum": None,
                        "layer_tokens": n[0],
                    }
                )
    pq.write_table(pa.Table.from_pylist(table, schema=USAGE_SCHEMA), fp / "usage.parquet")
    for d in ("all", "math", "law"):
        tokens = usage[(d, "all")][0]
        ranking = {f"layer_{layer}": sorted(range(E), key=lambda e: (-tokens[layer][e], e)) for layer in range(L)}
        (fp / "rankings" / "frequency").mkdir(parents=True, exist_ok=True)
        (fp / "rankings" / "frequency" / f"{d}.json").write_text(json.dumps(ranking))
    # the shape analyze writes: per domain, per-layer lists and scalars (values here are only placeholders)
    law_stats = {
        "n_prompts": 3,
        "usage_token_level": {"g": [1.5, 2.5, 3.5], "p": [0.01, 0.2, 1e-9], "q": [0.03, 0.2, 3e-9]},
        "stability": {"jaccard_vs_full_mean": [0.9, 0.8, 0.7], "n_boot": 10},
        "summary": {"median_tvd_vs_rest": 0.25},
    }
    (fp / "stats.json").write_text(json.dumps({"segment": "all", "domains": {"law": law_stats}}))
    (fp / "manifest.json").write_text(
        json.dumps({"criteria": ["frequency"], "domains": ["math", "law"], "segment": "all"})
    )


def trace_rows(run: Path) -> list[dict]:
    return [r for p in sorted((run / "traces").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def read_data_js(path: Path) -> dict:
    """The JSON inside a `moeprint.register("key", {...});` data script."""
    text = path.read_text()
    start = text.index(",") + 1
    return json.loads(text[start : text.rindex(")")])
