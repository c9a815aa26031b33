"""The README's real-use steps on a 1-layer gpt-oss-20b stand-in (every dimension real but the layer count),
on the CPU in bfloat16: record -> analyze -> plan -> prune (MXFP4 -> MXFP4) -> stock load -> mask == pruned
-> evaluate. Each model-loading step runs in its own process, so at most one model is in memory (< 10 GB)."""

from __future__ import annotations

import gc
import json

import pytest
import torch

from conftest import run_cli
from evaluate_helpers import domain_texts, write_jsonl
from standin_fixtures import harmony_tokenizer_dir, standin_1layer, tiktoken_dir  # noqa: F401 (fixtures)

CPU_BF16 = ("--device", "cpu", "--dtype", "bfloat16")


@pytest.mark.slow
def test_real_use_steps_on_the_standin(standin_1layer, tmp_path):
    from moeprint.io.loader import LoadSettings, load_causal_lm, load_tokenizer
    from moeprint.io.shards import list_tensors
    from moeprint.prune import load_masked
    from moeprint.select.plan import load_plan

    model = standin_1layer
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"id": f"{d}-{i}", "domain": d, "messages": [{"role": "user", "content": t["text"]}]}
            for i, (d, t) in enumerate((t["domain"], t) for t in domain_texts(seed=1, per_domain=2, n_words=12))
        ],
    )
    run = tmp_path / "run"
    run_cli(
        "record",
        model,
        "--prompts",
        prompts,
        "--max-new-tokens",
        "0",
        "--batch-size",
        "4",
        "--expert-norms",
        "--quiet",
        *CPU_BF16,
        "--out",
        run,
        check=True,
        timeout=1200,
    )
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["num_layers"], manifest["num_experts"], manifest["top_k"]) == (1, 32, 4)
    assert manifest["generation"]["dtype"] == "bfloat16" and manifest["template_inputs"]["date"] == "2025-08-05"

    run_cli("analyze", run, "--no-stats", check=True)
    plan = tmp_path / "law-8.json"
    run_cli("plan", run, "--domain", "law", "--experts", "8", "--criterion", "reap", "--out", plan, check=True)
    kept = load_plan(plan).kept
    assert len(kept) == 1 and len(kept[0]) == 8

    ckpt = tmp_path / "law-8"
    run_cli("prune", model, "--plan", plan, "--out", ckpt, "--no-card", check=True, timeout=1200)
    tensors = {t.name: t for t in list_tensors(ckpt)}
    assert tensors["model.layers.0.mlp.experts.gate_up_proj_blocks"].shape == (8, 5760, 90, 16)  # MXFP4 stays MXFP4
    assert tensors["model.layers.0.mlp.experts.gate_up_proj_blocks"].dtype == "U8"

    bf16 = LoadSettings("cpu", "bfloat16")
    tok = load_tokenizer(ckpt)
    ids = tok("The court held that the contract was void.", return_tensors="pt")["input_ids"]  # (1, S)
    pruned = load_causal_lm(ckpt, bf16)  # stock AutoModelForCausalLM underneath
    assert pruned.config.num_local_experts == 8
    with torch.no_grad():
        pruned_logits = pruned(ids).logits
    del pruned
    gc.collect()
    masked = load_masked(model, load_plan(plan), bf16)
    with torch.no_grad():
        masked_logits = masked(ids).logits
    del masked
    gc.collect()
    assert masked_logits.dtype == torch.bfloat16 and torch.isfinite(masked_logits).all()
    assert torch.equal(masked_logits, pruned_logits)

    texts = write_jsonl(tmp_path / "texts.jsonl", domain_texts(seed=2, per_domain=1, n_words=12))
    out = tmp_path / "eval.json"
    run_cli(
        "evaluate",
        model,
        "--plan",
        plan,
        "--texts",
        texts,
        "--max-tokens",
        "32",
        *CPU_BF16,
        "--out",
        out,
        check=True,
        timeout=1200,
    )
    result = json.loads(out.read_text())
    law = result["text"]["per_domain"]["law"]
    assert law["n_tokens"] > 0 and law["kl"] >= 0 and law["ppl_cut"] > 0
