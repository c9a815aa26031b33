"""Healing (issue 15): refit the kept router rows; the rows file; the healed checkpoint oracle; the CLI.

KL numbers are checked against a physically pruned checkpoint loaded by stock transformers (no mask involved):
healing must lower KL(base || cut) of that checkpoint on the calibration texts.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import assert_clean_error, run_cli
from evaluate_helpers import domain_texts, write_jsonl
from moeprint.adapters import adapter_for
from moeprint.adapters.base import RouterRows
from moeprint.errors import MoeprintError
from moeprint.evaluate.cut import load_model
from moeprint.evaluate.heal import HealSettings, heal_rows, split_calibration
from moeprint.io.loader import LoadSettings
from moeprint.prune import build_checkpoint
from moeprint.prune.rows import HealedRows, load_router_rows, rows_for_plan, save_router_rows
from moeprint.select.plan import save_plan
from prune_helpers import main_in_process, make_plan, read_tensors

E, TOP_K = 8, 2  # the tiny model's experts and top-k
FAST = dict(steps=30, token_budget=512, window=32, batch_tokens=128, eval_every=5, patience=3)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return load_model(tiny_model_dir, LoadSettings(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def calib_texts():
    return [r["text"] for r in domain_texts(seed=7, per_domain=12, n_words=40)]


def _checkpoint_kl(base_model, ckpt_dir, batches) -> float:
    """Mean token KL(base || checkpoint) over `batches`, the checkpoint loaded on its own."""
    cut = AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, attention in batches:
            p = torch.log_softmax(base_model(input_ids=ids, attention_mask=attention).logits[:, :-1], -1)  # (B,S-1,V)
            q = torch.log_softmax(cut(input_ids=ids, attention_mask=attention).logits[:, :-1], -1)
            valid = (attention[:, 1:] * attention[:, :-1]).bool()  # (B, S-1)
            kl = (p.exp() * (p - q)).sum(-1)[valid]
            total, count = total + float(kl.double().sum()), count + int(valid.sum())
    return total / count


@pytest.mark.parametrize("objective", ["e2e", "local", "bias"])
def test_healing_lowers_calibration_kl_of_the_pruned_checkpoint(base, tiny_model_dir, calib_texts, tmp_path, objective):
    plan = make_plan(tiny_model_dir, 3, seed=1)
    settings = HealSettings(objective=objective, **FAST)
    calib = split_calibration(base.model, base.tokenizer, calib_texts, settings)
    result = heal_rows(base.model, base.adapter, plan.kept, calib, settings)
    build_checkpoint(tiny_model_dir, plan, tmp_path / "plain", card=None, progress=False)
    build_checkpoint(tiny_model_dir, plan, tmp_path / "healed", card=None, progress=False, router_rows=result.rows)
    before = _checkpoint_kl(base.model, tmp_path / "plain", calib.fit)
    after = _checkpoint_kl(base.model, tmp_path / "healed", calib.fit)
    assert before > 1e-4  # the cut really differs from its base (a random tiny model: small KL)
    assert after < before, (objective, before, after)
    assert result.fit_kl_before == pytest.approx(before, rel=1e-4)  # its own bookkeeping agrees
    assert result.fit_kl_after == pytest.approx(after, rel=1e-4)
    if objective != "local":  # early stopping keeps the rows of the best held-back KL (initial included);
        assert result.kl_after <= result.kl_before  # local stops on each layer's error, not on the KL
    if objective == "bias":  # only biases move
        for r, (_, block), keep in zip(result.rows, base.adapter.moe_blocks(base.model), plan.kept):
            assert torch.equal(r.weight, block.router.weight[list(keep)])


def test_healing_leaves_the_model_untouched_and_is_deterministic(base, tiny_model_dir, calib_texts):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    plan = make_plan(tiny_model_dir, TOP_K, seed=2)
    runs = []
    for seed in (5, 5, 6):
        settings = HealSettings(objective="e2e", seed=seed, **{**FAST, "steps": 10})
        calib = split_calibration(base.model, base.tokenizer, calib_texts, settings)
        runs.append(heal_rows(base.model, base.adapter, plan.kept, calib, settings).rows)
    assert all(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a.weight, b.weight) for a, b in zip(runs[0], runs[2]))  # another seed, other rows
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad and p.grad is not None for p in base.model.parameters())


def _perturbed_rows(model, kept, seed=0) -> list[RouterRows]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for layer, keep in zip(model.model.layers, kept):
        w, b = layer.mlp.router.weight.detach()[list(keep)], layer.mlp.router.bias.detach()[list(keep)]
        out.append(RouterRows(w + 0.5 * torch.randn(w.shape, generator=g), b + torch.randn(b.shape, generator=g)))
    return out


def test_rows_file_round_trip_and_bad_files(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    plan = make_plan(tiny_model_dir, 3, seed=3)
    rows = _perturbed_rows(model, plan.kept)
    info = {"objective": "e2e", "holdout_kl_before": 0.5, "holdout_kl_after": 0.25}
    path = save_router_rows(
        tmp_path / "p.router_rows.safetensors", HealedRows(plan.kept, tuple(rows), info, plan.to_json())
    )
    back = load_router_rows(path)
    assert back.kept == plan.kept and back.info == info and back.plan == plan.to_json()
    assert all(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) for a, b in zip(rows, back.rows))
    # a healed plan names its rows file; commands find it beside the plan
    plan_path = save_plan(
        plan.__class__(**{**plan.__dict__, "extra": {**plan.extra, "router_rows": path.name}}), tmp_path / "p.json"
    )
    from moeprint.select.plan import load_plan

    found = rows_for_plan(load_plan(plan_path), plan_path, None)
    assert torch.equal(found.rows[0].weight, rows[0].weight)
    with pytest.raises(MoeprintError, match="other kept experts"):
        back.check_plan(make_plan(tiny_model_dir, 3, seed=4))
    with pytest.raises(MoeprintError, match="file name beside the plan"):
        rows_for_plan(
            plan.__class__(**{**plan.__dict__, "extra": {"router_rows": "../x.safetensors"}}), plan_path, None
        )
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MoeprintError, match="not a readable safetensors"):
        load_router_rows(tmp_path / "bad.safetensors")
    with pytest.raises(MoeprintError, match="hidden size"):
        back.check_hidden({"hidden_size": 64})


@pytest.mark.parametrize("n", [1, TOP_K, E - 1])
def test_healed_checkpoint_equals_base_masked_with_the_rows(tiny_model_dir, tmp_path, n):
    """The oracle, extended: prune with replaced router rows == base masked with the same rows, bit for bit;
    experts and every non-router tensor are the plain pruned checkpoint's bytes."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    adapter = adapter_for(base.config)
    plan = make_plan(tiny_model_dir, n, seed=n)
    rows = _perturbed_rows(base, plan.kept, seed=n)
    build_checkpoint(tiny_model_dir, plan, tmp_path / "healed", card=None, progress=False, router_rows=rows)
    build_checkpoint(tiny_model_dir, plan, tmp_path / "plain", card=None, progress=False)
    ids = torch.randint(0, 400, (2, 11), generator=torch.Generator().manual_seed(n))  # (B, S)
    healed = AutoModelForCausalLM.from_pretrained(tmp_path / "healed", dtype=torch.float32).eval()
    with torch.no_grad():
        with adapter.router_mask(base, plan.kept, rows):
            masked = base(ids).logits  # (B, S, V)
        with adapter.router_mask(base, plan.kept):
            unhealed = base(ids).logits
        assert torch.equal(healed(ids).logits, masked)
        # the rows change the routing, except with one expert kept: its weight is softmax of one logit, always 1
        assert torch.equal(masked, unhealed) == (n == 1)
    written, plain = read_tensors(tmp_path / "healed"), read_tensors(tmp_path / "plain")
    assert written.keys() == plain.keys()
    for name, t in written.items():
        if ".router." in name:
            layer = int(name.split(".")[2])
            assert torch.equal(t, rows[layer].bias if name.endswith("bias") else rows[layer].weight)
        else:
            assert torch.equal(t, plain[name]), name


def _write_plan(tiny_model_dir, path, n=3, seed=1):
    return save_plan(make_plan(tiny_model_dir, n, seed=seed), path)


@pytest.mark.slow
def test_heal_cli_then_prune_and_evaluate(tiny_model_dir, tmp_path, calib_texts, capsys):
    plan_path = _write_plan(tiny_model_dir, tmp_path / "law-3.json")
    calib = write_jsonl(tmp_path / "calib.jsonl", [{"text": t, "domain": "law"} for t in calib_texts])
    out = tmp_path / "healed" / "law-3-healed.json"
    proc = run_cli(
        "heal",
        tiny_model_dir,
        "--plan",
        plan_path,
        "--texts",
        calib,
        "--objective",
        "e2e",
        "--steps",
        "8",
        "--tokens",
        "512",
        "--out",
        out,
        check=True,
    )
    assert "held-back KL" in proc.stdout
    healed_plan = json.loads(out.read_text())
    rows_file = out.parent / healed_plan["extra"]["router_rows"]
    assert rows_file.name == "law-3-healed.router_rows.safetensors" and rows_file.is_file()
    assert healed_plan["kept"] == json.loads(plan_path.read_text())["kept"]
    assert healed_plan["extra"]["heal"]["objective"] == "e2e"
    rows = load_router_rows(rows_file)

    ckpt = tmp_path / "ckpt"
    assert main_in_process(capsys, "prune", tiny_model_dir, "--plan", out, "--out", ckpt)[0] == 0
    card = (ckpt / "README.md").read_text()
    assert "router rows (weight and bias) of the kept experts were retrained" in card
    assert "every expert weight and every other tensor is the base model's" in card
    written = read_tensors(ckpt)
    assert torch.equal(written["model.layers.0.mlp.router.weight"], rows.rows[0].weight)
    record = json.loads((ckpt / "moeprint_plan.json").read_text())
    assert "router_rows" not in record["extra"] and record["router_rows_replaced"]

    texts = write_jsonl(tmp_path / "held.jsonl", domain_texts(seed=99, per_domain=2))
    res, res_ckpt = tmp_path / "eval.json", tmp_path / "eval-ckpt.json"
    assert (
        main_in_process(
            capsys, "evaluate", tiny_model_dir, "--plan", out, "--texts", texts, "--no-speculative", "--out", res
        )[0]
        == 0
    )
    assert (
        main_in_process(
            capsys,
            "evaluate",
            tiny_model_dir,
            "--checkpoint",
            ckpt,
            "--texts",
            texts,
            "--no-speculative",
            "--out",
            res_ckpt,
        )[0]
        == 0
    )
    a, b = json.loads(res.read_text()), json.loads(res_ckpt.read_text())
    assert a["cut"]["healed"] == "e2e"
    # the healed mask and the healed checkpoint score the same (the oracle, through the commands)
    assert a["text"]["all"]["kl"] == b["text"]["all"]["kl"]


def test_heal_cli_bad_input(tiny_model_dir, tmp_path, calib_texts, capsys):
    plan_path = _write_plan(tiny_model_dir, tmp_path / "p.json")
    calib = write_jsonl(tmp_path / "calib.jsonl", [{"text": t} for t in calib_texts])
    out = tmp_path / "h.json"
    (tmp_path / "run").mkdir()
    proc = run_cli("heal", tiny_model_dir, "--plan", plan_path, "--out", out)  # the real entry point once
    assert_clean_error(proc)
    assert "exactly one calibration source" in proc.stderr
    cases = [
        (
            ["--plan", plan_path, "--texts", calib, "--run", tmp_path / "run", "--out", out],
            "exactly one calibration source",
        ),
        (["--plan", plan_path, "--texts", calib, "--out", plan_path], "is an input"),
        (["--plan", plan_path, "--texts", calib, "--steps", "0", "--out", out], "steps"),
        (["--plan", plan_path, "--texts", calib, "--holdout", "1.5", "--out", out], "held-back share"),
        (["--plan", plan_path, "--texts", tmp_path / "missing.jsonl", "--out", out], "does not exist"),
        (["--plan", plan_path, "--texts", calib, "--out", tmp_path / "h.txt"], "must be a .json"),
    ]
    for args, message in cases:
        code, err = main_in_process(capsys, "heal", tiny_model_dir, *args)
        assert code == 2 and err.strip().startswith("error:") and "Traceback" not in err, (args, err)
        assert message in err, (args, err)
    assert not out.exists() and not (tmp_path / "h.router_rows.safetensors").exists()
    # rows fitted for another plan are refused by prune before anything is written
    other = make_plan(tiny_model_dir, 3, seed=9)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = save_router_rows(
        tmp_path / "o.router_rows.safetensors", HealedRows(other.kept, tuple(_perturbed_rows(model, other.kept)), {})
    )
    code, err = main_in_process(
        capsys, "prune", tiny_model_dir, "--plan", plan_path, "--router-rows", rows, "--out", tmp_path / "ck"
    )
    assert code == 2 and "other kept experts" in err and not (tmp_path / "ck").exists()


def test_sweep_scores_healed_rows_as_their_own_cut(tiny_model_dir, tmp_path):
    """A rows file given to the sweep is scored as its own cut, and scores what the healed mask scores
    when `evaluate` applies the same rows to the same plan."""
    from evaluate_helpers import make_run
    from moeprint.evaluate import EvalSettings, evaluate
    from moeprint.evaluate.sweep import SweepInputs, SweepSpec, sweep

    run = make_run(tmp_path / "run", tiny_model_dir, domain_texts(seed=1, per_domain=3)).root
    texts = write_jsonl(tmp_path / "held.jsonl", domain_texts(seed=2, per_domain=2))
    plan = make_plan(tiny_model_dir, 3, seed=5)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows_path = save_router_rows(
        tmp_path / "h.router_rows.safetensors",
        HealedRows(plan.kept, tuple(_perturbed_rows(model, plan.kept)), {"objective": "e2e"}, plan.to_json()),
    )
    out = sweep(
        SweepInputs(run, texts, tiny_model_dir),
        out=tmp_path / "sweep",
        spec=SweepSpec(
            domains=["law"],
            sizes="3",
            criteria=["frequency"],
            random_seeds=0,
            plots=False,
            router_rows=[str(rows_path)],
        ),
    )
    doc = json.loads((out / "results.json").read_text())
    healed = [c for c in doc["cuts"] if c["cut"]["criterion"] == "test+healed-e2e"]
    assert len(healed) == 1 and healed[0]["cut"]["kept"] == [list(k) for k in plan.kept]
    plan_path = save_plan(plan, tmp_path / "plan.json")
    single = evaluate(
        tiny_model_dir,
        plan_path=plan_path,
        router_rows=rows_path,
        texts_path=texts,
        out=tmp_path / "e.json",
        settings=EvalSettings(speculative=False),
    )
    assert json.loads(single.read_text())["text"]["all"]["kl"] == healed[0]["text"]["all"]["kl"]
    unhealed = evaluate(
        tiny_model_dir,
        plan_path=plan_path,
        texts_path=texts,
        out=tmp_path / "u.json",
        settings=EvalSettings(speculative=False),
    )
    assert json.loads(unhealed.read_text())["text"]["all"]["kl"] != healed[0]["text"]["all"]["kl"]
