"""Model cards follow the hub's conventions and parse with huggingface_hub offline (no network)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

from conftest import run_cli
from moeprint.errors import MoeprintError
from moeprint.prune.card import CardOptions, build_card, validate_card
from moeprint.types import PrunePlan
from prune_helpers import make_plan, write_run


def _evaluation(path, domain="law"):
    """An evaluate result in the moeprint.evaluate/ schema with two evaluation domains."""
    doc = {
        "schema": "moeprint.evaluate/1",
        "cut": {"name": "cut", "kind": "plan", "domain": domain, "criterion": "frequency", "n_experts": 3},
        "text": {
            "per_domain": {
                "law": {"ppl_cut": 5.0, "ppl_base": 4.0, "kl": 0.125, "n_tokens": 100},
                "math": {"ppl_cut": 8.0, "ppl_base": 6.0, "kl": 0.25, "n_tokens": 50},
            },
            "in_domain": {"ppl_cut": 5.0, "ppl_base": 4.0, "kl": 0.125},
            "off_domain": {"ppl_cut": 8.0, "ppl_base": 6.0, "kl": 0.25},
            "all": {"ppl_cut": 6.0, "ppl_base": 4.6, "kl": 0.17},
        },
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture()
def dressed_base(tiny_model_dir, tmp_path):
    """The tiny model with files that describe the base (a training plot and manifest), as the testbed has."""
    base = tmp_path / "model"
    shutil.copytree(tiny_model_dir, base)
    (base / "loss_curve.png").write_bytes(b"\x89PNG fake")
    (base / "loss_curve.svg").write_text("<svg/>")
    (base / "training_manifest.json").write_text(json.dumps({"kind": "moeprint-testbed-model"}))
    return base


def test_prune_card_carries_hub_metadata(dressed_base, tmp_path):
    run = write_run(tmp_path / "calib-run", dressed_base)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(n_tokens=12345, n_prompts=17, prompt_suite_sha256="ab" * 32, kind="recorded")
    (run / "manifest.json").write_text(json.dumps(manifest))
    plan, out = tmp_path / "plan.json", tmp_path / "cut"
    run_cli("plan", run, "--domain", "law", "--experts", "3", "--criterion", "reap", "--out", plan, check=True)
    run_cli(
        "prune", dressed_base, "--plan", plan, "--out", out, "--eval", _evaluation(tmp_path / "eval.json"), check=True
    )

    text = (out / "README.md").read_text()
    meta = metadata_load(out / "README.md")  # the hub's own YAML front-matter parser
    card = ModelCard.load(out / "README.md")
    assert "base_model_relation" not in meta and "pruned derivative" in text
    assert {"expert-pruning", "mixture-of-experts", "reap", "law"} <= set(meta["tags"])
    assert card.data.base_model is None  # a local base has no hub id to name
    # model-index: the cut's perplexity per domain and its retention (base / cut), computed here independently
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("held-out law text", "ppl")] == 5.0
    assert results[("held-out law text", "ppl_retention")] == pytest.approx(4.0 / 5.0)
    assert results[("held-out math text", "ppl_retention")] == pytest.approx(6.0 / 8.0)
    assert results[("held-out math text", "kl")] == 0.25 and ("held-out math text", "kl_retention") not in results
    assert meta["model-index"][0]["name"] == "cut"
    # calibration data: source (the run's name, not its path), tokens, hash
    assert "moeprint run calib-run" in text and "12,345 tokens" in text and f"sha256 `{'ab' * 32}`" in text
    assert str(tmp_path) not in text  # no local path reaches the card
    # the local base is named by its weights, not by its folder's last name
    assert "Base model | `model`" not in text and "weights fingerprint `" in text
    assert "https://github.com/)" not in text and "Made with moeprint" in text
    # files that describe the base stay behind; the tokenizer and chat template come along
    assert not any((out / n).exists() for n in ("loss_curve.png", "loss_curve.svg", "training_manifest.json"))
    assert (out / "tokenizer.json").read_bytes() == (dressed_base / "tokenizer.json").read_bytes()
    kept = json.loads(plan.read_text())["kept"]
    for layer, ids in enumerate(kept):
        assert f"- layer {layer}: {', '.join(map(str, ids))}" in text


def test_ranking_file_calibration_is_the_files_hash(tiny_model_dir, tmp_path):
    ranking = tmp_path / "law.json"
    ranking.write_text(json.dumps({f"layer_{i}": list(range(8))[::-1] for i in range(2)}))
    plan, out = tmp_path / "plan.json", tmp_path / "cut"
    run_cli("plan", "--ranking", ranking, "--model", tiny_model_dir, "--experts", "4", "--out", plan, check=True)
    run_cli("prune", tiny_model_dir, "--plan", plan, "--out", out, "--base-model-id", "openai/gpt-oss-20b", check=True)
    text = (out / "README.md").read_text()
    assert f"sha256 `{hashlib.sha256(ranking.read_bytes()).hexdigest()}`" in text and "ranking file law.json" in text
    assert ModelCard.load(out / "README.md").data.base_model == "openai/gpt-oss-20b"
    assert "Ranking: `law.json`" in text  # the file's name, not the machine's folders


def test_a_relative_local_base_is_not_taken_for_a_hub_id(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent.parent)
    relative = f"{tiny_model_dir.parent.name}/{tiny_model_dir.name}"  # shaped like owner/name, but a folder here
    plan = make_plan(tiny_model_dir, 3)
    plan = PrunePlan(**{**plan.__dict__, "base_model": relative})
    card = build_card(
        name="c",
        plan=plan,
        config=json.loads((tiny_model_dir / "config.json").read_text()),
        family="gpt-oss",
        n_parameters=1,
        n_bytes=1,
        weight_format="f32",
        options=CardOptions(),
    )
    assert card.data.base_model is None and "a local GptOssForCausalLM checkpoint" in card.text


def test_kept_experts_use_decoder_layer_numbers():
    """A family with dense layers: MoE layer i is not decoder layer i."""
    config = {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "num_hidden_layers": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "mlp_only_layers": [0, 2],
        "decoder_sparse_step": 1,
        "hidden_size": 8,
        "vocab_size": 32,
    }
    plan = PrunePlan(
        base_model="Qwen/x",
        architecture="Qwen3MoeForCausalLM",
        domain="law",
        criterion="frequency",
        n_experts=2,
        top_k=2,
        kept=((0, 3), (1, 2)),
        base_num_experts=4,
    )
    card = build_card(
        name="c",
        plan=plan,
        config=config,
        family="qwen3-moe",
        n_parameters=10,
        n_bytes=40,
        weight_format="bf16",
        options=CardOptions(),
    )
    assert "- layer 1: 0, 3" in card.text and "- layer 3: 1, 2" in card.text
    assert "- layer 0:" not in card.text and "| MoE layers | 2 (of 4 decoder layers) |" in card.text


def test_invalid_relation_and_bad_base_are_refused(tiny_model_dir):
    plan = make_plan(tiny_model_dir, 3)
    good = build_card(
        name="c",
        plan=plan,
        config=json.loads((tiny_model_dir / "config.json").read_text()),
        family="gpt-oss",
        n_parameters=1,
        n_bytes=1,
        weight_format="f32",
        options=CardOptions(base_model_id="openai/gpt-oss-20b"),
    )
    validate_card(good)
    bad = ModelCard(
        str(good).replace(
            "base_model: openai/gpt-oss-20b", "base_model: openai/gpt-oss-20b\nbase_model_relation: pruned"
        )
    )
    with pytest.raises(MoeprintError, match="base_model_relation 'pruned'"):
        validate_card(bad)
    with pytest.raises(MoeprintError, match="not a hub id"):
        validate_card(ModelCard(str(good).replace("base_model: openai/gpt-oss-20b", "base_model: /home/me/model")))


def test_card_module_reads_no_evaluate_file():
    """The card is given rendered retention by its caller; the prune stage never imports evaluate."""
    import ast
    import inspect

    import moeprint.prune.card as card_module

    tree = ast.parse(inspect.getsource(card_module))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not [m for m in imported if m and m.startswith("moeprint.evaluate")]
    assert "moeprint.evaluate/" not in inspect.getsource(card_module)


def test_free_form_eval_json_is_shown_as_numbers_without_hub_claims(tmp_path):
    from moeprint.evaluate.results import card_retention

    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"ppl": {"law": 12.5}, "note": "x", "ok": True, "n": 3}))
    rendered = card_retention(path)
    assert rendered.intro == "From `mine.json`:" and rendered.metrics == ()
    assert rendered.table.splitlines() == ["| metric | value |", "|---|---|", "| ppl.law | 12.5 |", "| n | 3 |"]
    path.write_text(json.dumps({"note": "no numbers"}))
    with pytest.raises(MoeprintError, match="holds no numbers"):
        card_retention(path)
