"""Write small run directories in the recorded-run schema (moeprint.io.run) from arrays, for analyze tests."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moeprint.io.run import PROMPTS_SCHEMA, trace_schema


def write_run(root: Path, prompts: list[dict], num_experts: int, rows_per_part: int = 500) -> Path:
    """prompts: [{prompt_id, domain, ids (T, L, k), weights (T, L, k), token_ids (T,), segments [T],
    norms (T, L, k) optional}]. Writes manifest.json (last), prompts.parquet and traces/part-*.parquet."""
    root = Path(root)
    (root / "traces").mkdir(parents=True)
    with_norms = "norms" in prompts[0]
    schema = trace_schema(with_norms=with_norms)
    _, num_layers, top_k = prompts[0]["ids"].shape
    rows: dict[str, list] = {f.name: [] for f in schema}
    for p in prompts:
        t = len(p["ids"])
        rows["prompt_id"] += [p["prompt_id"]] * t
        rows["domain"] += [p["domain"]] * t
        rows["position"] += list(range(t))
        rows["token_id"] += [int(x) for x in p["token_ids"]]
        rows["is_generated"] += [s != "prompt" for s in p["segments"]]
        rows["segment"] += list(p["segments"])
        rows["ids"] += p["ids"].reshape(t, -1).astype(int).tolist()
        rows["weights"] += p["weights"].reshape(t, -1).astype(float).tolist()
        if with_norms:
            rows["expert_norms"] += p["norms"].reshape(t, -1).astype(float).tolist()
    table = pa.Table.from_pydict(rows, schema)
    for i, start in enumerate(range(0, table.num_rows, rows_per_part)):
        pq.write_table(table.slice(start, rows_per_part), root / "traces" / f"part-{i:05d}.parquet")
    prompt_rows = {f.name: [] for f in PROMPTS_SCHEMA}
    for p in prompts:
        n_prompt = sum(s == "prompt" for s in p["segments"])
        for name, value in [
            ("prompt_id", p["prompt_id"]),
            ("domain", p["domain"]),
            ("source", "synthetic"),
            ("category", ""),
            ("text", "x"),
            ("messages", None),
            ("rendered", "x"),
            ("completion", ""),
            ("finished", True),
            ("n_prompt_tokens", n_prompt),
            ("n_generated_tokens", len(p["ids"]) - n_prompt),
        ]:
            prompt_rows[name].append(value)
    pq.write_table(pa.Table.from_pydict(prompt_rows, PROMPTS_SCHEMA), root / "prompts.parquet")
    manifest = {
        "kind": "recorded",
        "model": "synthetic",
        "model_sha256": None,
        "architecture": "GptOssForCausalLM",
        "num_layers": num_layers,
        "num_experts": num_experts,
        "top_k": top_k,
        "domains": sorted({p["domain"] for p in prompts}),
        "n_prompts": len(prompts),
        "n_tokens": table.num_rows,
        "has_logits": False,
        "has_norms": with_norms,
        "has_token_ids": True,
        "prompt_suite_sha256": None,
        "generation": {},
        "versions": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def top_k_from_logits(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, L, E) logits -> ids (T, L, k) best first and softmax-over-top-k weights, like gpt-oss."""
    ids = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
    top = np.take_along_axis(logits, ids, axis=-1)
    w = np.exp(top - top.max(axis=-1, keepdims=True))
    return ids.astype(np.int16), (w / w.sum(axis=-1, keepdims=True)).astype(np.float32)


def token_routed_run(
    root: Path,
    seed: int,
    domain_shift: float,
    n_prompts_per_domain: int = 12,
    tokens_per_prompt: int = 80,
    num_layers: int = 3,
    num_experts: int = 8,
    top_k: int = 2,
    with_norms: bool = False,
    domains: tuple[str, ...] = ("law", "math"),
    data_seed: int | None = None,
) -> Path:
    """Routing decided by the token (a fixed random preference per token id) plus noise.

    Domains use different token mixes (so usage differs even when routing ignores the domain);
    `domain_shift` > 0 additionally moves the SAME token towards domain-specific experts.
    `seed` fixes the "model" (preferences); `data_seed` the sampled prompts (default seed + 1000).
    """
    rng = np.random.default_rng(seed)
    vocab = 12
    token_pref = rng.normal(0, 1.5, (vocab, num_layers, num_experts))
    domain_pref = rng.normal(0, 1.0, (len(domains), num_layers, num_experts))
    rng = np.random.default_rng(seed + 1000 if data_seed is None else data_seed)
    prompts = []
    for di, domain in enumerate(domains):
        mix = np.ones(vocab)
        mix[di * 3 : (di + 1) * 3] = 6.0  # each domain favours its own few tokens; the rest are shared
        mix /= mix.sum()
        for i in range(n_prompts_per_domain):
            tok = rng.choice(vocab, size=tokens_per_prompt, p=mix)
            logits = (
                token_pref[tok]
                + domain_shift * domain_pref[di][None]
                + rng.normal(0, 1.0, (tokens_per_prompt, num_layers, num_experts))
            )
            ids, w = top_k_from_logits(logits, top_k)
            p = {
                "prompt_id": f"{domain}-{i}",
                "domain": domain,
                "ids": ids,
                "weights": w,
                "token_ids": tok,
                "segments": ["prompt"] * 20 + ["think"] * 40 + ["answer"] * (tokens_per_prompt - 60),
            }
            if with_norms:
                p["norms"] = rng.uniform(0.5, 2.0, ids.shape).astype(np.float32)
            prompts.append(p)
    return write_run(root, prompts, num_experts)


def loop_counts(run_dir):
    """The independent count: every trace row as Python objects, dict of counts."""
    tokens, weights, coact = defaultdict(int), defaultdict(float), defaultdict(int)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    k = manifest["top_k"]
    for part in sorted((run_dir / "traces").glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            for layer in range(manifest["num_layers"]):
                chosen = row["ids"][layer * k : (layer + 1) * k]
                for j, e in enumerate(chosen):
                    key = (row["domain"], row["segment"], layer, e)
                    tokens[key] += 1
                    weights[key] += row["weights"][layer * k + j]
                for a in chosen:
                    for b in chosen:
                        if a < b:
                            coact[(row["domain"], row["segment"], layer, a, b)] += 1
    return tokens, weights, coact


def check_against_loop(run_dir):
    tokens, weights, coact = loop_counts(run_dir)
    usage = pq.read_table(run_dir / "fingerprints" / "usage.parquet").to_pylist()
    keys = [(r["domain"], r["segment"], r["layer"], r["expert"]) for r in usage]
    assert len(keys) == len(set(keys)), "duplicate usage rows"
    raw = [r for r in usage if r["domain"] != "all" and r["segment"] != "all"]
    assert raw, "no raw usage rows"
    for r in raw:
        key = (r["domain"], r["segment"], r["layer"], r["expert"])
        assert r["tokens"] == tokens.get(key, 0), key
        assert r["weight_sum"] == pytest.approx(weights.get(key, 0.0), rel=1e-9, abs=1e-9)
    # pooled `all` rows are sums of the raw rows
    pooled = defaultdict(int)
    for key, v in tokens.items():
        pooled[(key[2], key[3])] += v
    for r in usage:
        if r["domain"] == "all" and r["segment"] == "all":
            assert r["tokens"] == pooled.get((r["layer"], r["expert"]), 0)
    pairs = pq.read_table(run_dir / "fingerprints" / "coactivation.parquet").to_pylist()
    got = {
        (r["domain"], r["segment"], r["layer"], r["expert_a"], r["expert_b"]): r["count"]
        for r in pairs
        if r["domain"] != "all" and r["segment"] != "all"
    }
    assert got == {k: v for k, v in coact.items() if k[0] != "all"}  # `all`-labelled prompts live in the pool
    pooled_pairs = defaultdict(int)
    for key, v in coact.items():
        pooled_pairs[key[2:]] += v
    assert {
        (r["layer"], r["expert_a"], r["expert_b"]): r["count"]
        for r in pairs
        if r["domain"] == "all" and r["segment"] == "all"
    } == dict(pooled_pairs)
