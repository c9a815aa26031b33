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
from moeprint.evaluate.heal_plan import heal_plan
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


def _checkpoint_kl(base_model, ckpt_dir, batches, dtype=torch.float32) -> float:
    """Mean token KL(base || checkpoint) over `batches`, the checkpoint loaded on its own in `dtype`."""
    cut = AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=dtype).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, attention in batches:
            p = torch.log_softmax(base_model(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)
            q = torch.log_softmax(cut(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)  # (B,S-1,V)
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


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_heal_plan_in_the_loaders_dtype(tiny_model_dir, tmp_path, calib_texts, dtype):
    """The model loaded in `dtype` (the shared loader); rows and optimiser stay float32, cast in the mask."""
    plan_path = _write_plan(tiny_model_dir, tmp_path / "p.json")
    texts = write_jsonl(tmp_path / "calib.jsonl", [{"text": t} for t in calib_texts])
    settings = HealSettings(objective="e2e", seed=3, **FAST)
    load = LoadSettings(device="cpu", dtype=dtype)
    done = [
        heal_plan(
            tiny_model_dir, plan_path, tmp_path / f"h{i}.json", settings, texts_path=texts, progress=False, load=load
        )
        for i in (0, 1)
    ]
    a, b = (load_router_rows(d.rows_path) for d in done)
    assert all(torch.equal(x.weight, y.weight) and torch.equal(x.bias, y.bias) for x, y in zip(a.rows, b.rows))
    assert a.info["load"]["model_dtype"] == dtype
    torch_dtype = getattr(torch, dtype)
    for r in a.rows:  # stored in the checkpoint's float32; in bf16 they are the bf16 values the heal measured
        assert r.weight.dtype == torch.float32
        assert torch.equal(r.weight.to(torch_dtype).float(), r.weight)
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch_dtype).eval()
    plan = make_plan(tiny_model_dir, 3, seed=1)
    build_checkpoint(tiny_model_dir, plan, tmp_path / "plain", card=None, progress=False)
    build_checkpoint(tiny_model_dir, plan, tmp_path / "healed", card=None, progress=False, router_rows=a.rows)
    fit = split_calibration(base_model, load_model(tiny_model_dir).tokenizer, calib_texts, settings).fit
    before = _checkpoint_kl(base_model, tmp_path / "plain", fit, torch_dtype)
    after = _checkpoint_kl(base_model, tmp_path / "healed", fit, torch_dtype)
    assert after < before, (dtype, before, after)
    assert a.info["fit_kl_before"] == pytest.approx(before, rel=1e-3)  # its bookkeeping, same dtype
    assert a.info["fit_kl_after"] == pytest.approx(after, rel=1e-2)


def test_healing_refuses_fused_moe_blocks(base, tiny_model_dir):
    """Fused blocks (MXFP4 GPU kernels) get their rows written in place by the mask: no gradient would flow."""
    import dataclasses

    block = base.adapter.moe_blocks(base.model)[0][1]
    fused = dataclasses.replace(base.adapter, fused_moe_classes=(type(block).__name__,))
    settings = HealSettings(objective="e2e", **FAST)
    with pytest.raises(MoeprintError, match="fused"):
        heal_rows(base.model, fused, make_plan(tiny_model_dir, 3).kept, None, settings)


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


def _plain_nll(base, kept, texts) -> float:
    """Mean next-token NLL one text at a time (no batching or padding), log_softmax + gather, under the mask."""
    total, n = 0.0, 0
    with torch.no_grad(), base.adapter.router_mask(base.model, kept):
        for t in texts:
            ids = base.tokenizer(t, add_special_tokens=False)["input_ids"][:256]
            lp = torch.log_softmax(base.model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
            total -= sum(float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1))
            n += len(ids) - 1
    return total / n


@pytest.mark.slow
def test_greedy_plan_validation_split(tiny_model_dir, tmp_path):
    """greedy-plan --validation-tokens: search on the even prompts, choose between the greedy set and the
    ranking's top-N by the loss on the odd ones (checked by a plain loop on those prompts)."""
    from evaluate_helpers import make_run
    from moeprint.io.run import open_run
    from moeprint.select.greedy import run_calibration_texts
    from moeprint.select.rankings import load_ranking

    run = make_run(tmp_path / "run", tiny_model_dir, domain_texts(seed=1, per_domain=4)).root
    out = tmp_path / "law-greedy-3.json"
    args = ["greedy-plan", run, "--domain", "law", "--experts", "3", "--from", "gate-mass", "--candidates", "2"]
    args += ["--tokens", "4096"]
    proc = run_cli(*args, "--validation-tokens", "4096", "--out", out, check=True)
    assert "validation loss" in proc.stdout
    plan = json.loads(out.read_text())
    assert plan["extra"]["validation_tokens"] == 4096
    texts = run_calibration_texts(run, "law")
    assert len(texts) == 4
    base = load_model(tiny_model_dir)
    kept = tuple(map(tuple, plan["kept"]))
    ranking, _ = load_ranking(open_run(run), "gate-mass", "law")
    top3 = tuple(tuple(sorted(ranking[f"layer_{l}"][:3])) for l in range(base.num_layers))
    chosen, start = _plain_nll(base, kept, texts[1::2]), _plain_nll(base, top3, texts[1::2])
    assert plan["extra"]["calibration_loss"] == pytest.approx(chosen, rel=1e-4)  # the validation prompts' loss
    assert plan["extra"]["start_loss"] == pytest.approx(start, rel=1e-4)
    assert chosen <= start + 1e-6
    assert plan["extra"]["greedy_path_loss"] != pytest.approx(_plain_nll(base, kept, texts[0::2]), rel=1e-6) or (
        kept == top3  # the search prompts' loss differs from what was recorded (unless the sets coincide)
    )
    bad = run_cli(*args, "--validation-tokens", "-1", "--out", tmp_path / "x.json")
    assert_clean_error(bad)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_prune_and_factory_heal_option(tiny_model_dir, tmp_path, calib_texts, capsys):
    """prune --heal writes what `heal` + `prune` write (same settings, same rows); factory --heal heals every cut
    on the run's prompts by default, and a rerun without --heal refuses the healed outputs."""
    from evaluate_helpers import make_run

    plan_path = _write_plan(tiny_model_dir, tmp_path / "law-3.json")
    calib = write_jsonl(tmp_path / "calib.jsonl", [{"text": t, "domain": "law"} for t in calib_texts])
    settings = ["--heal-steps", "6", "--heal-tokens", "512", "--heal-seed", "4"]
    ckpt = tmp_path / "pruned-healed"
    run_cli(
        "prune", tiny_model_dir, "--plan", plan_path, "--heal", "e2e", "--heal-texts", calib, *settings, "--out", ckpt
    )
    card = (ckpt / "README.md").read_text()
    assert "router rows (weight and bias) of the kept experts were retrained" in card
    record = json.loads((ckpt / "moeprint_plan.json").read_text())
    assert record["extra"]["heal"]["objective"] == "e2e" and record["router_rows_replaced"]
    healed_plan = tmp_path / "h" / "law-3-healed.json"
    heal_args = ["--texts", calib, "--steps", "6", "--tokens", "512", "--seed", "4", "--out", healed_plan]
    assert main_in_process(capsys, "heal", tiny_model_dir, "--plan", plan_path, *heal_args)[0] == 0
    rows = load_router_rows(healed_plan.parent / "law-3-healed.router_rows.safetensors")
    written, plain = read_tensors(ckpt), read_tensors(_plain_checkpoint(tiny_model_dir, plan_path, tmp_path / "plain"))
    for layer, r in enumerate(rows.rows):
        assert torch.equal(written[f"model.layers.{layer}.mlp.router.weight"], r.weight)
        assert torch.equal(written[f"model.layers.{layer}.mlp.router.bias"], r.bias)
        assert not torch.equal(r.weight, plain[f"model.layers.{layer}.mlp.router.weight"])
    assert all(torch.equal(written[k], v) for k, v in plain.items() if ".router." not in k)  # experts untouched

    run = make_run(tmp_path / "run", tiny_model_dir, domain_texts(seed=3, per_domain=4)).root
    out = tmp_path / "factory"
    args = ["factory", tiny_model_dir, run, "--domains", "law", "--sizes", "3", "--criterion", "gate-mass"]
    run_cli(*args, "--heal", "bias", *settings, "--out", out, check=True)
    (target,) = [p for p in out.iterdir() if p.is_dir()]
    record = json.loads((target / "moeprint_plan.json").read_text())
    assert record["extra"]["heal"]["objective"] == "bias" and record["extra"]["heal"]["calibration"]["run"] == str(run)
    assert "were retrained" in (target / "README.md").read_text()
    again = run_cli(*args, "--out", out)  # the same outputs unhealed: refused, nothing replaced
    assert_clean_error(again)
    assert "different plan" in again.stderr


def _plain_checkpoint(model_dir, plan_path, out):
    plan = json.loads(plan_path.read_text())
    build_checkpoint(model_dir, make_plan(model_dir, plan["n_experts"], seed=1), out, card=None, progress=False)
    return out


def test_prune_and_factory_heal_bad_input(tiny_model_dir, tmp_path, calib_texts, capsys):
    plan_path = _write_plan(tiny_model_dir, tmp_path / "p.json")
    calib = write_jsonl(tmp_path / "calib.jsonl", [{"text": t} for t in calib_texts])
    out = tmp_path / "ck"
    proc = run_cli("prune", tiny_model_dir, "--plan", plan_path, "--heal", "e2e", "--out", out)  # no source
    assert_clean_error(proc)
    assert "exactly one calibration source" in proc.stderr
    (tmp_path / "run").mkdir()
    cases = [
        (["prune", "--heal-texts", calib, "--heal-run", tmp_path / "run"], "exactly one calibration source"),
        (["prune", "--heal-texts", tmp_path / "missing.jsonl"], "does not exist"),
        (["prune", "--heal-texts", calib, "--heal-steps", "0"], "steps"),
        (["prune", "--heal-texts", calib, "--heal-tokens", "100"], "tokens >= 2 x window"),
        (["prune", "--heal-run", tmp_path / "run"], "run"),
        (["factory", "--rankings-dir", tmp_path / "run", "--sizes", "3"], "exactly one calibration source"),
    ]
    for args, message in cases:
        command, rest = args[0], args[1:]
        where = ["--plan", plan_path] if command == "prune" else []
        code, err = main_in_process(capsys, command, tiny_model_dir, *where, "--heal", "e2e", *rest, "--out", out)
        assert code == 2 and err.strip().startswith("error:") and "Traceback" not in err, (args, err)
        assert message in err, (args, err)
        assert not out.exists()
