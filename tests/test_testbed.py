"""The testbed: committed model and texts load with stock classes, and the model is fit for purpose.

The fitness test re-measures the committed model on a SUBSET of the committed test texts (1,024 tokens
per domain, selections from 2,048 calibration tokens) to keep CPU time near a minute; docs/testbed.md
has the same numbers on more tokens (`moeprint testbed fitness`).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import moeprint.testbed as tb
from conftest import assert_clean_error, run_cli
from moeprint.io.atomic import read_json
from moeprint.testbed.routing import (
    masked_perplexity,
    perplexity,
    routing_stats,
    select_experts,
)

MISSION = ("law", "math", "science", "health_or_medicine")


@pytest.fixture(scope="module")
def testbed():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tb.testbed_path()
    model = AutoModelForCausalLM.from_pretrained(path)  # stock class, no trust_remote_code
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_testbed_loads_with_stock_classes_and_chats(testbed):
    model, tok = testbed
    cfg = model.config
    assert type(model).__name__ == "GptOssForCausalLM"
    assert (cfg.num_local_experts, cfg.num_experts_per_tok, cfg.num_hidden_layers) == (32, 4, 4)
    assert tok.eos_token == "<|return|>" and tok.pad_token == "<|pad|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Bonjour"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|start|>user<|message|>Bonjour<|end|><|start|>assistant"
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_testbed_path_cli_prints_the_model_folder():
    proc = run_cli("testbed", "path", check=True)
    assert proc.stdout.strip() == str(tb.testbed_path())


def test_committed_texts_match_the_manifests():
    """The committed files are byte-identical to what the model's training run recorded."""
    data = tb.testbed_data_path()
    corpus_files = read_json(tb.testbed_path() / "training_manifest.json")["corpus_files"]
    manifest = read_json(data / "manifest.json")
    for domain, meta in manifest["domains"].items():
        assert meta["license"] and meta["package_version"]
        for split in ("calibration", "test"):
            digest = hashlib.sha256((data / domain / f"{split}.jsonl").read_bytes()).hexdigest()
            assert digest == meta["splits"][split]["sha256"] == corpus_files[domain][split]
    texts = tb.testbed_texts("test", ["code"])
    assert list(texts) == ["code"] and "def " in "".join(texts["code"])


def test_routing_stats_match_a_plain_loop_over_router_logits(testbed):
    """Hook-collected counts == top-k of the model's own recorded router logits, counted in Python."""
    model, tok = testbed
    ids = torch.tensor(tok("The court held that the contract was void. " * 30).input_ids[:129])
    stats = routing_stats(model, ids, seq_len=128)
    with torch.no_grad():
        logits = model(input_ids=ids[None, :128], output_router_logits=True).router_logits
    for layer, layer_logits in enumerate(logits):
        counts = [0] * 32
        for row in layer_logits.tolist():
            for e in sorted(range(32), key=lambda j: -row[j])[:4]:
                counts[e] += 1
        assert stats.frequency[layer].tolist() == counts
    assert stats.tokens == 128
    kept = select_experts(stats, 8, "frequency")
    for layer, keep in enumerate(kept):
        order = sorted(range(32), key=lambda e: (-stats.frequency[layer][e].item(), e))
        assert keep == sorted(order[:8])


def test_masking_every_expert_kept_changes_nothing_and_dropping_changes_something(testbed):
    model, tok = testbed
    ids = torch.tensor(tok("def add(a, b):\n    return a + b\n" * 20).input_ids[:257])
    full = perplexity(model, ids)
    assert masked_perplexity(model, ids, [list(range(32))] * 4) == pytest.approx(full, rel=1e-6)
    assert masked_perplexity(model, ids, [list(range(4))] * 4) != pytest.approx(full, rel=1e-3)
    assert perplexity(model, ids) == pytest.approx(full, rel=1e-9)  # the mask was removed


@pytest.mark.slow
def test_testbed_is_fit_for_purpose():
    from moeprint.testbed.cli_support import fitness_table
    from moeprint.testbed.fitness import fitness_report

    report = fitness_report(
        tb.testbed_path(), tb.testbed_data_path(), test_tokens=1024, calibration_tokens=2048, criteria=("gate-mass",)
    )
    print(fitness_table(report))
    # far below a unigram model estimated on the committed calibration texts
    for domain, ppl in report["perplexity"].items():
        assert ppl < report["unigram_perplexity"][domain] / 3, domain
    # no dead experts
    assert min(report["min_expert_share_per_layer"]) >= 0.005
    # learned specialisation: own selection >= 20% better than other domains' selections, N = 16 and 8
    for n in (16, 8):
        cells = [r for r in report["cross_domain"].values() if r["n"] == n]
        winners = [r["domain"] for r in cells if r["reduction"] >= 0.20]
        assert len(winners) >= 3, (n, {r["domain"]: round(r["reduction"], 3) for r in cells})
    # the untrained control is a different model, measured on the same texts: its domains' expert shares are
    # closer together than the trained model's (docs/testbed.md: TV distance 0.32 trained vs 0.18 untrained)
    trained, untrained = report["usage_trained"], report["usage_untrained"]
    assert all(0 <= x <= 1 for x in trained["tv_distance_per_layer"] + untrained["tv_distance_per_layer"])
    assert trained["tv_distance_mean"] > untrained["tv_distance_mean"] + 0.05


@pytest.mark.slow
def test_miniature_training_runs_from_committed_texts(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "mini"
    proc = run_cli("testbed", "train", "--miniature", "--steps", "30", "--out", out, check=True)
    assert "held-out perplexity" in proc.stdout
    manifest = json.loads((out / "training_manifest.json").read_text())
    losses = manifest["loss_history"]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert (out / "loss_curve.png").exists() and (out / "expert_load.png").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_local_experts == 8


def test_bad_inputs_give_one_clear_line(tmp_path):
    assert_clean_error(run_cli("testbed", "train", "--out", tmp_path / "m"))  # no corpus
    assert_clean_error(run_cli("testbed", "train", "--miniature"))  # would overwrite the packaged model
    assert_clean_error(run_cli("testbed", "train", "--corpus", tmp_path, "--out", tmp_path / "m"))  # not a corpus
    # an existing output folder (or, without the Debian packages, the missing-package message)
    assert_clean_error(run_cli("testbed", "corpus", "--out", tmp_path))


def test_training_manifest_numbers_belong_to_the_committed_weights(testbed):
    """The manifest's held-out perplexity is recomputed from the committed weights and texts, and the
    recorded retraining from the committed seed reproduced it within 2%."""
    from moeprint.testbed.fitness import streams_from_texts

    model, tok = testbed
    manifest = read_json(tb.testbed_path() / "training_manifest.json")
    stream = streams_from_texts(tok, tb.testbed_texts("test", ["math"]))["math"]
    assert len(stream) == manifest["test_tokens"]["math"]
    assert perplexity(model, stream) == pytest.approx(manifest["heldout_perplexity"]["math"], rel=1e-4)
    # the reproduction summary follows from the per-domain numbers it records beside the committed ones
    retrained, committed = manifest["reproduction"]["retrained_heldout_perplexity"], manifest["heldout_perplexity"]
    assert retrained.keys() == committed.keys()
    worst = max(abs(retrained[d] - committed[d]) / committed[d] for d in committed)
    assert manifest["reproduction"]["max_relative_perplexity_difference"] == pytest.approx(worst, abs=1e-12)
    assert manifest["reproduction"]["within_2_percent"] == (worst <= 0.02)
