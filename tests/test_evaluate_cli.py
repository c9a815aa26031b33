"""`moeprint evaluate` and `moeprint sweep` through the real entry point, plus the lm-eval bridge."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from conftest import assert_clean_error, run_cli
from evaluate_helpers import domain_texts, make_run, write_jsonl
from moeprint.evaluate import load_retention
from moeprint.evaluate.results import RETENTION_COLUMNS, SECTIONS, EvaluateResult, SweepResult, read_result

KEPT = [[0, 2, 5, 7], [1, 2, 3, 6]]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("evalin")
    calibration = domain_texts(seed=1, per_domain=3)
    held_out = domain_texts(seed=2, per_domain=3)
    plan = {
        "base_model": str(tiny_model_dir),
        "architecture": "GptOssForCausalLM",
        "domain": "law",
        "criterion": "frequency",
        "n_experts": 4,
        "top_k": 2,
        "kept": KEPT,
    }
    (d / "plan.json").write_text(json.dumps(plan))
    return {
        "dir": d,
        "run": make_run(d / "run", tiny_model_dir, calibration).root,
        "texts": write_jsonl(d / "texts.jsonl", held_out),
        "overlapping": write_jsonl(d / "overlap.jsonl", held_out + calibration[:1]),
        "mc": write_jsonl(
            d / "mc.jsonl",
            [
                {
                    "question": "Which word is legal?",
                    "choices": ["court", "prime", "matrix"],
                    "answer": 0,
                    "domain": "law",
                },
                {
                    "question": "Pick a proof word",
                    "correct_answer": "theorem",
                    "incorrect_answers": ["judge", "tort"],
                    "domain": "math",
                },
            ],
        ),
        "prompts": write_jsonl(
            d / "prompts.jsonl",
            [
                {"id": "p1", "domain": "law", "text": "The court"},
                {"id": "p2", "domain": "math", "messages": [{"role": "user", "content": "Prove the lemma"}]},
            ],
        ),
        "plan": d / "plan.json",
    }


def _text_fields(metrics) -> tuple:
    return (metrics.n_tokens, metrics.ppl_base, metrics.ppl_cut, metrics.ppl_ratio, metrics.kl, metrics.top1_agreement)


def _raw_text_fields(values: dict) -> tuple:
    return tuple(values[k] for k in ("n_tokens", "ppl_base", "ppl_cut", "ppl_ratio", "kl", "top1_agreement"))


def _raw_cut_fields(cut: dict) -> tuple:
    return tuple(cut.get(k) for k in ("name", "kind", "domain", "criterion", "n_experts", "seed"))


def _record_cut_fields(cut) -> tuple:
    return (cut.name, cut.kind, cut.domain, cut.criterion, cut.n_experts, cut.seed)


def check_evaluate_record(path) -> None:
    """The results reader's record of an evaluate JSON holds what the file says (read here with json)."""
    doc, record = json.loads(path.read_text()), read_result(path)
    assert isinstance(record, EvaluateResult) and record.schema == doc["schema"]
    assert _record_cut_fields(record.cut) == _raw_cut_fields(doc["cut"])
    assert set(record.result.sections) == {s for s in SECTIONS if isinstance(doc.get(s), dict)}  # null: not measured
    per_domain = doc["text"]["per_domain"]
    assert set(record.result.text_domains()) == set(per_domain)
    for domain, values in per_domain.items():
        metrics = record.result.text(domain)
        assert _text_fields(metrics) == _raw_text_fields(values)
        assert metrics.retention == pytest.approx(values["ppl_base"] / values["ppl_cut"])
    assert record.result.value("text.in_domain.kl") == doc["text"]["in_domain"]["kl"]


def check_sweep_record(folder) -> None:
    """The record of a sweep folder: every cut, every domain's numbers, and the retention the site plots."""
    doc, record = json.loads((folder / "results.json").read_text()), read_result(folder)
    assert isinstance(record, SweepResult) and record.schema == doc["schema"]
    assert (record.domains, record.sizes, record.criteria) == (doc["domains"], doc["sizes"], doc["criteria"])
    assert (record.num_layers, record.num_experts, record.top_k) == (
        doc["num_layers"],
        doc["num_experts"],
        doc["top_k"],
    )
    assert len(record.cuts) == len(doc["cuts"])
    expected: dict[tuple, list[float]] = {}
    for entry, raw in zip(record.cuts, doc["cuts"]):
        assert _record_cut_fields(entry.cut) == _raw_cut_fields(raw["cut"])
        assert entry.cut.raw["kept"] == raw["cut"]["kept"]
        for domain, values in raw["text"]["per_domain"].items():
            assert _text_fields(entry.text(domain)) == _raw_text_fields(values)
            if raw["cut"]["criterion"] == "random" or raw["cut"]["domain"] == domain:
                key = (domain, raw["cut"]["criterion"], raw["cut"]["n_experts"])
                expected.setdefault(key, []).append(values["ppl_base"] / values["ppl_cut"])
    got = {
        (d, c, n): v for d, crits in record.ppl_retention().items() for c, pts in crits.items() for n, v in pts.items()
    }
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert got[key] == pytest.approx(sum(values) / len(values)), key


def test_evaluate_plan_and_checkpoint_agree(inputs, tiny_model_dir, tmp_path):
    """A plan (router mask) and the physically pruned checkpoint give the same numbers."""
    out_plan, out_ckpt = tmp_path / "plan.json", tmp_path / "ckpt.json"
    run_cli(
        "evaluate",
        tiny_model_dir,
        "--plan",
        inputs["plan"],
        "--texts",
        inputs["texts"],
        "--mc",
        inputs["mc"],
        "--prompts",
        inputs["prompts"],
        "--max-new-tokens",
        "16",
        "--out",
        out_plan,
        check=True,
    )
    from moeprint.prune.surgery import prune_checkpoint
    from moeprint.select.plan import load_plan

    ckpt = tmp_path / "ckpt"
    prune_checkpoint(tiny_model_dir, load_plan(inputs["plan"]), ckpt, progress=False)
    run_cli(
        "evaluate",
        tiny_model_dir,
        "--checkpoint",
        ckpt,
        "--texts",
        inputs["texts"],
        "--no-speculative",
        "--out",
        out_ckpt,
        check=True,
    )
    plan, checkpoint = json.loads(out_plan.read_text()), json.loads(out_ckpt.read_text())
    assert plan["schema"] == "moeprint.evaluate/1" and plan["cut"]["kind"] == "plan"
    assert checkpoint["cut"]["kind"] == "checkpoint" and checkpoint["cut"]["n_experts"] == 4
    for domain in ("law", "math"):
        a, b = plan["text"]["per_domain"][domain], checkpoint["text"]["per_domain"][domain]
        assert a["ppl_cut"] == pytest.approx(b["ppl_cut"], rel=1e-5)
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-3, abs=1e-7) and a["kl"] > 0
    assert plan["text"]["in_domain"]["n_tokens"] == plan["text"]["per_domain"]["law"]["n_tokens"]
    assert plan["mc"]["all"]["n"] == 2
    assert plan["generation"]["all"]["n"] == 2 and len(plan["generation"]["samples"]) == 2
    assert plan["speculative"]["all"]["drafted"] > 0

    from moeprint.evaluate.results import retention_markdown

    card = retention_markdown(out_plan)
    law = plan["text"]["in_domain"]
    assert f"| perplexity (base -> cut) | {law['ppl_base']:.3f} -> {law['ppl_cut']:.3f} |" in card

    rows = load_retention(out_plan)
    assert rows and all(tuple(r) == RETENTION_COLUMNS for r in rows)
    metrics = Counter(r["metric"] for r in rows)
    assert metrics["ppl"] == 2 and metrics["mc_acc"] == 2 and metrics["acceptance_rate"] == 2
    ppl_law = next(r for r in rows if r["metric"] == "ppl" and r["eval_domain"] == "law")
    assert ppl_law["in_domain"] is True
    assert ppl_law["retention"] == pytest.approx(plan["text"]["per_domain"]["law"]["retention"])
    check_evaluate_record(out_plan)
    check_evaluate_record(out_ckpt)


@pytest.mark.parametrize("case", ["bad_expert", "missing_texts", "no_domain", "both_cuts", "bad_mc"])
def test_evaluate_bad_input_is_one_clean_error(case, inputs, tiny_model_dir, tmp_path):
    out = tmp_path / "out.json"
    texts, extra = inputs["texts"], []
    if case == "bad_expert":
        plan = json.loads(inputs["plan"].read_text())
        plan["kept"][1] = [1, 2, 3, 99]
        (tmp_path / "p.json").write_text(json.dumps(plan))
        extra = ["--plan", tmp_path / "p.json"]
    else:
        extra = ["--plan", inputs["plan"]]
    if case == "missing_texts":
        texts = tmp_path / "nope.jsonl"
    if case == "no_domain":
        texts = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}])
    if case == "both_cuts":
        extra += ["--checkpoint", tiny_model_dir]
    if case == "bad_mc":
        extra += ["--mc", write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 5}])]
    proc = run_cli("evaluate", tiny_model_dir, *extra, "--texts", texts, "--out", out)
    assert_clean_error(proc)
    assert not out.exists()


def test_sweep_tables_plots_and_rankings(inputs, tiny_model_dir, tmp_path):
    out = tmp_path / "sweep"
    run_cli(
        "sweep",
        inputs["run"],
        "--texts",
        inputs["texts"],
        "--mc",
        inputs["mc"],
        "--domains",
        "law,math",
        "--sizes",
        "2,50%,8",
        "--criteria",
        "frequency,lift",
        "--random-seeds",
        "2",
        "--out",
        out,
        check=True,
    )
    assert {p.name for p in out.iterdir()} >= {
        "results.json",
        "results.csv",
        "manifest.json",
        "retention.png",
        "retention.svg",
        "kl.png",
        "kl.svg",
    }
    rows = list(csv.DictReader((out / "results.csv").open()))
    n_cuts = 2 * 2 * 3 + 2 * 3  # domains x criteria x sizes + seeds x sizes
    assert len(rows) == n_cuts * 2  # every cut scored on both evaluation domains
    for row in rows:
        if row["n_experts"] == "8":  # every expert kept: identical to the base
            assert float(row["kl"]) == 0.0 and float(row["ppl_ratio"]) == 1.0
    doc = json.loads((out / "results.json").read_text())
    assert doc["calibration"]["status"] == "disjoint"
    assert doc["ranking_source"] == {"frequency": "rankings file", "lift": "computed from fingerprints"}

    # the frequency plan for law at 2 experts = the 2 most-routed experts per layer, counted by a plain loop
    import pyarrow.parquet as pq

    table = pq.read_table(next((inputs["run"] / "traces").glob("part-*.parquet"))).to_pylist()
    expected = []
    for layer in range(2):
        counts = Counter(e for r in table if r["domain"] == "law" for e in r["ids"][layer * 2 : layer * 2 + 2])
        ranked = sorted(range(8), key=lambda e: (-counts[e], e))
        expected.append(sorted(ranked[:2]))
    law2 = next(
        c
        for c in doc["cuts"]
        if c["cut"]["domain"] == "law" and c["cut"]["criterion"] == "frequency" and c["cut"]["n_experts"] == 2
    )
    assert law2["cut"]["kept"] == expected
    retention = load_retention(out)
    assert len([r for r in retention if r["metric"] == "ppl"]) == n_cuts * 2
    assert len([r for r in retention if r["metric"] == "mc_acc"]) == n_cuts * 2
    check_sweep_record(out)


def test_sweep_refuses_calibration_overlap(inputs, tiny_model_dir, tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(
        "sweep", inputs["run"], "--texts", inputs["overlapping"], "--domains", "law", "--sizes", "4", "--out", out
    )
    assert_clean_error(proc)
    assert "calibration" in proc.stderr and "law-1-0" in proc.stderr
    assert not out.exists()
    proc = run_cli(
        "sweep",
        inputs["run"],
        "--texts",
        inputs["texts"],
        "--domains",
        "law",
        "--sizes",
        "4",
        "--criteria",
        "reap",
        "--out",
        out,
    )
    assert_clean_error(proc)
    assert "reap" in proc.stderr and not out.exists()


def test_lm_eval_bridge_offline_runs_the_masked_model(inputs, tiny_model_dir, tmp_path, monkeypatch):
    """lm-eval's accuracy through the bridge equals our own log-likelihood scoring, for the cut AND the base,
    on questions whose answer key is the cut's choice: so the mask is active inside lm-eval (cut: 1.0)."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'moeprint[lm-eval]')")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    from moeprint.adapters import load_config_dict
    from moeprint.evaluate import choice
    from moeprint.evaluate.cut import base_cut, load_model, plan_cut, read_plan
    from moeprint.evaluate.harness import run_lm_eval
    from moeprint.evaluate.inputs import load_choice_questions

    words = ["court", "prime", "matrix", "tort", "lemma", "appeal", "series", "vector", "judge", "limit"]
    rows = [
        {"question": f"Which word comes after {words[i]}?", "choices": words[i + 1 : i + 4] + words[:1], "answer": 0}
        for i in range(6)
    ]
    base = load_model(tiny_model_dir)
    plan = {**json.loads(inputs["plan"].read_text()), "n_experts": 1, "kept": [[0], [1]]}  # a harsh cut
    (tmp_path / "plan1.json").write_text(json.dumps(plan))
    cut = plan_cut(base, read_plan(tmp_path / "plan1.json", load_config_dict(tiny_model_dir)))
    questions = load_choice_questions(write_jsonl(tmp_path / "probe.jsonl", rows))
    picks_cut = [max(range(4), key=s.loglik.__getitem__) for s in choice.score_choices(cut, questions, base.tokenizer)]
    picks_base = [
        max(range(4), key=s.loglik.__getitem__) for s in choice.score_choices(base_cut(base), questions, base.tokenizer)
    ]
    assert picks_cut != picks_base  # precondition: the cut answers differently somewhere
    data = write_jsonl(tmp_path / "mc.jsonl", [{**r, "answer": p} for r, p in zip(rows, picks_cut)])
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    got_cut = run_lm_eval(cut, base.tokenizer, str(tmp_path / "tiny_mc.yaml"))
    got_base = run_lm_eval(base_cut(base), base.tokenizer, str(tmp_path / "tiny_mc.yaml"))
    assert got_cut["tiny_mc"]["acc,none"] == 1.0
    assert got_base["tiny_mc"]["acc,none"] == pytest.approx(sum(a == b for a, b in zip(picks_base, picks_cut)) / 6)


def test_lm_eval_cli_bad_task_is_clean_error(inputs, tiny_model_dir, tmp_path):
    proc = run_cli(
        "evaluate",
        tiny_model_dir,
        "--plan",
        inputs["plan"],
        "--texts",
        inputs["texts"],
        "--lm-eval",
        str(tmp_path / "missing.yaml"),
        "--out",
        tmp_path / "o.json",
    )
    assert_clean_error(proc)
    assert "missing.yaml" in proc.stderr
