"""`moeprint prune` and `moeprint mask` through the entry point; bad input never leaves complete-looking output."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import assert_clean_error, run_cli
from moeprint.errors import MoeprintError
from moeprint.prune import build_checkpoint
from moeprint.prune.mask import generate_text
from moeprint.select.plan import save_plan
from prune_helpers import assert_error_line, main_in_process, make_plan


@pytest.fixture()
def plan_file(tiny_model_dir, tmp_path):
    plan = make_plan(tiny_model_dir, 3, seed=7)
    return save_plan(plan, tmp_path / "plan.json"), plan


def test_prune_and_mask_cli(tiny_model_dir, tmp_path, plan_file):
    path, plan = plan_file
    out = tmp_path / "out"
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"law": {"ppl_ratio": 1.25, "kl": 0.031}, "top1_agreement": 0.91}))
    run_cli(
        "prune",
        tiny_model_dir,
        "--plan",
        path,
        "--out",
        out,
        "--base-model-id",
        "openai/gpt-oss-20b",
        "--dataset",
        "AmanPriyanshu/GPT-OSS-20B-MoE-expert-activations",
        "--eval",
        evaluation,
        "--examples",
        "--example-prompt",
        "Hello",
        check=True,
    )
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "openai/gpt-oss-20b" and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0" and "expert-pruning" in card.data.tags
    assert "| law.ppl_ratio | 1.25 |" in card.text and "trust_remote_code" in card.text
    assert "| Experts per layer | 3 (of 8) |" in card.text
    # the example in the card is what the pruned checkpoint itself generates (greedy)
    tokenizer = AutoTokenizer.from_pretrained(out)
    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    reply = generate_text(pruned, tokenizer, "Hello", max_new_tokens=48).strip()
    assert f"**Prompt:** Hello\n\n```text\n{reply or '(empty)'}\n```" in card.text
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes()

    # mask: the plan as a router mask at load time generates what the pruned checkpoint generates
    proc = run_cli("mask", tiny_model_dir, "--plan", path, "--prompt", "Hello", "--max-new-tokens", "12", check=True)
    assert proc.stdout.strip() == generate_text(pruned, tokenizer, "Hello", max_new_tokens=12).strip()


def test_bad_inputs_give_one_line_and_no_output(tiny_model_dir, tmp_path, plan_file, capsys):
    path, plan = plan_file
    out = tmp_path / "out"

    def fails(message, model=tiny_model_dir, plan_path=path):
        assert_error_line(*main_in_process(capsys, "prune", model, "--plan", plan_path, "--out", out), message)
        assert not out.exists() and not (tmp_path / ".out.partial").exists()

    # a plan for another model (24 layers x 32 experts), N = 0, N > E, not a plan at all
    other = json.loads(path.read_text())
    other.update(kept=[list(range(8))] * 24, n_experts=8, extra={"base_num_experts": 32})
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = run_cli("prune", tiny_model_dir, "--plan", tmp_path / "other.json", "--out", out)  # the real entry point
    assert_clean_error(proc)
    assert "made for a model with 32 experts" in proc.stderr and not out.exists()
    fails("made for a model with 32 experts", plan_path=tmp_path / "other.json")
    for n, kept in ((0, [[], []]), (9, [list(range(9))] * 2)):
        (tmp_path / "n.json").write_text(json.dumps({**json.loads(path.read_text()), "n_experts": n, "kept": kept}))
        fails("between 1 and 8", plan_path=tmp_path / "n.json")
    (tmp_path / "junk.json").write_text('{"kept": 3}')
    fails("is not a prune plan", plan_path=tmp_path / "junk.json")

    # damaged checkpoints: truncated shard, corrupt header, missing index
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    fails("is truncated", model=broken)
    weights.write_bytes(data[:8] + b"\x00garbage" + data[16:])
    fails("is corrupt", model=broken)
    weights.rename(broken / "model-00001-of-00002.safetensors")
    fails("the index is missing", model=broken)
    fails("does not exist", model=tmp_path / "nowhere")
    # a bad size and dtype never reach the weights either
    assert_error_line(
        *main_in_process(capsys, "prune", tiny_model_dir, "--plan", path, "--out", out, "--shard-size", "lots"),
        "cannot read shard size",
    )
    assert not out.exists()


def test_full_disk_and_interrupted_runs(tiny_model_dir, tmp_path, plan_file, capsys, monkeypatch):
    path, plan = plan_file
    out = tmp_path / "out"
    import moeprint.io.shards as shards

    real_save = shards.save_file
    calls = {"n": 0}

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards, "save_file", no_space)
    assert_error_line(*main_in_process(capsys, "prune", tiny_model_dir, "--plan", path, "--out", out), "disk is full")
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []

    def interrupted(*args, **kwargs):  # a kill halfway through writing the weights
        calls["n"] += 1
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_checkpoint(tiny_model_dir, plan, out, shard_size=60_000, card=None, progress=False)
    assert calls["n"] == 1 and not out.exists() and not (tmp_path / ".out.partial").exists()

    # a SIGKILL leaves only the hidden temp folder; a rerun replaces it and completes
    monkeypatch.setattr(shards, "save_file", real_save)
    (tmp_path / ".out.partial").mkdir()
    (tmp_path / ".out.partial" / "model-00001-of-00003.safetensors").write_bytes(b"half")
    build_checkpoint(tiny_model_dir, plan, out, card=None, progress=False)
    assert (out / "model.safetensors.index.json").exists() and not (tmp_path / ".out.partial").exists()
    with pytest.raises(MoeprintError, match="already exists"):
        build_checkpoint(tiny_model_dir, plan, out, card=None, progress=False)
