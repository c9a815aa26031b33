"""Test helpers for the evaluate stage: small JSONL inputs and a recorded-run stand-in.

`make_run` writes a run directory in the formats.md layout by running the tiny model on calibration
texts with forward hooks on its routers (real routing decisions, not made-up ids), then analyzes it
with the analyze stage (frequency and gate-mass rankings; lift and others are computed on demand)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from moeprint.io.run import PROMPTS_SCHEMA, RunDir, trace_schema

WORDS = {
    "law": "court judge statute plaintiff contract appeal verdict tort counsel ruling".split(),
    "math": "integral matrix prime theorem lemma proof vector sum limit series".split(),
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def domain_texts(seed: int, per_domain: int, n_words: int = 30) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": f"{d}-{seed}-{i}", "domain": d, "text": " ".join(rng.choice(w) for _ in range(n_words))}
        for d, w in WORDS.items()
        for i in range(per_domain)
    ]


@torch.no_grad()
def make_run(root: Path, model_dir: Path, rows: list[dict]) -> RunDir:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    layers = model.model.layers
    k = model.config.num_experts_per_tok
    run = RunDir(root)
    run.traces_dir.mkdir(parents=True)
    prompt_rows, trace_rows = [], []
    for row in rows:
        ids = tok(row["text"], add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
        seen = []
        hooks = [layer.mlp.router.register_forward_hook(lambda m, a, out: seen.append(out)) for layer in layers]
        model(input_ids=ids)
        for h in hooks:
            h.remove()
        topk_ids = torch.stack([out[2] for out in seen], 1)  # (T, L, k)
        topk_w = torch.stack([out[1] for out in seen], 1)  # (T, L, k)
        for pos in range(ids.shape[1]):
            trace_rows.append(
                {
                    "prompt_id": row["id"],
                    "domain": row["domain"],
                    "position": pos,
                    "token_id": int(ids[0, pos]),
                    "is_generated": False,
                    "segment": "prompt",
                    "ids": topk_ids[pos].reshape(-1).tolist(),
                    "weights": topk_w[pos].reshape(-1).tolist(),
                }
            )
        prompt_rows.append(
            {
                "prompt_id": row["id"],
                "domain": row["domain"],
                "source": "test",
                "category": "",
                "text": row["text"],
                "messages": None,
                "rendered": row["text"],
                "completion": "",
                "finished": True,
                "n_prompt_tokens": ids.shape[1],
                "n_generated_tokens": 0,
            }
        )
    pq.write_table(pa.Table.from_pylist(prompt_rows, schema=PROMPTS_SCHEMA), run.prompts_path)
    pq.write_table(pa.Table.from_pylist(trace_rows, schema=trace_schema()), run.traces_dir / "part-00000.parquet")
    run.manifest_path.write_text(
        json.dumps(
            {
                "kind": "recorded",
                "model": str(model_dir),
                "architecture": "GptOssForCausalLM",
                "num_layers": len(layers),
                "num_experts": model.config.num_local_experts,
                "top_k": k,
                "domains": sorted({r["domain"] for r in rows}),
                "n_prompts": len(rows),
                "n_tokens": len(trace_rows),
            }
        )
    )
    from moeprint.analyze import AnalyzeSettings, analyze_run

    settings = AnalyzeSettings(criteria=("frequency", "gate-mass"), with_stats=False, coactivation=False)
    analyze_run(run.root, settings, progress=False)
    return run
