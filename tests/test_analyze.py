"""analyze: fingerprint sums vs a plain-Python count, criteria, statistics on planted/null runs, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from conftest import REPO, assert_clean_error, run_cli
from moeprint.analyze import AnalyzeSettings, LayerUsage, UsageSums, analyze_run, interleave, rank_experts
from moeprint.analyze.stats import g_tests
from moeprint.errors import MoeprintError
from synthetic_runs import check_against_loop, token_routed_run


def test_counts_match_plain_python_loop_synthetic(tmp_path):
    # a recorded `all` label marks general prompts: they count only in the pooled `all` rows
    run = token_routed_run(
        tmp_path / "run", seed=1, domain_shift=0.0, n_prompts_per_domain=3, domains=("law", "math", "all")
    )
    analyze_run(run, AnalyzeSettings(with_stats=False), progress=False)
    check_against_loop(run)
    files = sorted(p.relative_to(run / "fingerprints").as_posix() for p in (run / "fingerprints").rglob("*.json"))
    assert "manifest.json" in files and "rankings/reference/all.json" in files and "rankings/lift/math.json" in files


def test_analysis_imports_stay_free_of_torch():
    # analyze and the CLI's validation must not pay torch's import time (seconds per command)
    code = "import sys, moeprint.types, moeprint.analyze.runio; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    ).stdout
    assert out.strip() == "False"


def test_merge_of_halves_equals_whole():
    rng = np.random.default_rng(0)
    ids = np.argsort(rng.random((300, 3, 8)), axis=-1)[..., :2].astype(np.int16)
    w = rng.random((300, 3, 2)).astype(np.float32)
    group = rng.integers(0, 4, 300)
    shape = (("a", "b"), ("x", "y"), 3, 8, 2)
    whole, first, second = UsageSums(*shape), UsageSums(*shape), UsageSums(*shape)
    whole.add_batch(group, ids, w)
    first.add_batch(group[:120], ids[:120], w[:120])
    second.add_batch(group[120:], ids[120:], w[120:])
    first.merge(second)
    assert (first.tokens == whole.tokens).all() and (first.coactivation == whole.coactivation).all()
    np.testing.assert_allclose(first.weight_sum, whole.weight_sum)
    assert (first.weight_max == whole.weight_max).all()
    assert whole.tokens.sum() == 300 * 3 * 2


def test_criteria_on_hand_made_usage():
    tokens = np.array([[10, 5, 0, 1]])
    usage = LayerUsage(
        tokens,
        np.array([[2.0, 4.0, 0.0, 0.5]]),
        8,
        None,
        norm_sum=np.array([[10.0, 50.0, 0.0, 30.0]]),
        weight_norm_sum=np.array([[1.0, 6.0, 0.0, 3.0]]),
    )
    assert rank_experts(usage, "frequency") == [[0, 1, 3, 2]]
    assert rank_experts(usage, "gate-mass") == [[1, 0, 3, 2]]
    assert rank_experts(usage, "reap") == [[3, 1, 0, 2]]  # mean: 0.1, 1.2, 0, 3.0 -> the rare expert wins
    assert rank_experts(usage, "reap-sum") == [[1, 3, 0, 2]]
    assert rank_experts(usage, "ean") == [[1, 3, 0, 2]]
    with pytest.raises(MoeprintError, match="norms"):
        rank_experts({"tokens": tokens}, "reap")
    with pytest.raises(MoeprintError, match="unknown criterion"):
        rank_experts(usage, "magic")
    assert interleave([3, 1, 0, 2], [1, 0, 2, 3]) == [3, 1, 0, 2]


def test_lift_prefers_enriched_expert_over_rare_one():
    # expert 1: 300 of 1000 domain decisions vs 10% elsewhere; expert 3: 2 domain decisions, 0 elsewhere
    domain = np.array([[498, 300, 200, 2]])
    rest = np.array([[6000, 1000, 3000, 0]])
    ranked = rank_experts({"tokens": domain}, "lift", {"tokens": domain + rest})
    assert ranked[0][0] == 1
    assert ranked[0].index(3) > ranked[0].index(1)
    # `all` has no rest: lift falls back to frequency
    assert rank_experts({"tokens": domain}, "lift", {"tokens": domain}) == rank_experts({"tokens": domain}, "frequency")


def test_vectorised_g_test_equals_scipy_chi2_contingency():
    rng = np.random.default_rng(3)
    dom = rng.integers(0, 40, (5, 8))
    rest = rng.integers(0, 40, (5, 8))
    dom[:, 2] = rest[:, 2] = 0  # an unused expert drops out of the table
    res = g_tests(dom, rest)
    for l in range(5):
        table = np.stack([dom[l], rest[l]])
        table = table[:, table.sum(0) > 0]
        ref = sps.chi2_contingency(table, correction=False, lambda_="log-likelihood")
        assert res["g"][l] == pytest.approx(ref.statistic, rel=1e-10)
        assert res["p"][l] == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        assert res["dof"][l] == ref.dof


def _stats(run):
    settings = AnalyzeSettings(n_perm=199, n_boot=50, token_perm=99, min_token_count=10, seed=0)
    analyze_run(run, settings, progress=False)
    return json.loads((run / "fingerprints" / "stats.json").read_text())["domains"]["math"]


def test_stats_planted_domain_difference_vs_token_mix_only(tmp_path):
    planted = _stats(token_routed_run(tmp_path / "planted", seed=2, domain_shift=1.5))
    mix_only = _stats(token_routed_run(tmp_path / "mix", seed=2, domain_shift=0.0))
    # planted: the same token routes differently by domain -> token-controlled q small in every layer
    assert max(planted["token_controlled"]["q"]) < 0.05
    assert max(planted["usage_prompt_permutation"]["q"]) < 0.05
    # token mix only: usage still differs (domains use different tokens) ...
    assert max(mix_only["usage_prompt_permutation"]["q"]) < 0.05
    # ... but given the token, routing does not depend on the domain
    assert min(mix_only["token_controlled"]["q"]) > 0.05
    assert np.median(mix_only["token_controlled"]["tvd_excess"]) < np.median(planted["token_controlled"]["tvd_excess"])
    assert 0 <= min(planted["stability"]["jaccard_vs_full_mean"]) <= 1
    from moeprint.analyze.plots import plot_specialisation

    stats = json.loads((tmp_path / "planted" / "fingerprints" / "stats.json").read_text())
    paths = plot_specialisation(stats, tmp_path / "plots")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)


def test_stats_permuted_labels_not_significant(tmp_path):
    run = token_routed_run(tmp_path / "run", seed=5, domain_shift=1.5)
    # relabel prompts at random (half of each true domain to each label): no domain signal left
    import pyarrow as pa

    rng = np.random.default_rng(0)
    relabel = {
        f"{d}-{i}": lab for d in ("law", "math") for i, lab in enumerate(rng.permutation(["law"] * 6 + ["math"] * 6))
    }
    for part in (run / "traces").glob("part-*.parquet"):
        t = pq.read_table(part)
        new = pa.array([relabel[p] for p in t["prompt_id"].to_pylist()])
        pq.write_table(t.set_column(t.schema.get_field_index("domain"), "domain", new), part)
    s = _stats(run)
    assert min(s["usage_prompt_permutation"]["q"]) > 0.05
    assert min(s["token_controlled"]["q"]) > 0.05


def test_norm_criteria_with_recorded_norms(tmp_path):
    run = token_routed_run(tmp_path / "run", seed=4, domain_shift=1.0, n_prompts_per_domain=3, with_norms=True)
    analyze_run(run, AnalyzeSettings(criteria=("reap", "reap-sum", "ean"), with_stats=False), progress=False)
    rows = pq.read_table(run / "fingerprints" / "usage.parquet").to_pylist()
    law = {(r["layer"], r["expert"]): r for r in rows if r["domain"] == "law" and r["segment"] == "all"}
    reap = json.loads((run / "fingerprints" / "rankings" / "reap" / "law.json").read_text())
    assert sorted(reap["layer_0"]) == list(range(8)) and len(reap) == 3
    mean = [law[(0, e)]["weight_norm_sum"] / law[(0, e)]["tokens"] if law[(0, e)]["tokens"] else 0.0 for e in range(8)]
    assert reap["layer_0"] == sorted(range(8), key=lambda e: -mean[e])
    ean = json.loads((run / "fingerprints" / "rankings" / "ean" / "law.json").read_text())
    assert ean["layer_2"] == sorted(range(8), key=lambda e: -law[(2, e)]["norm_sum"])


def test_cli_analyze_export_and_errors(tmp_path):
    run = token_routed_run(tmp_path / "run", seed=6, domain_shift=1.0, n_prompts_per_domain=3)
    proc = run_cli("export-rankings", run, "--criterion", "frequency", "--out", tmp_path / "ta")
    assert_clean_error(proc)  # no fingerprints yet
    assert "moeprint analyze" in proc.stderr
    run_cli(
        "analyze",
        run,
        "--segment",
        "generated",
        "--criteria",
        "frequency,lift",
        "--permutations",
        "19",
        "--bootstrap",
        "10",
        check=True,
    )
    manifest = json.loads((run / "fingerprints" / "manifest.json").read_text())
    assert manifest["segments_pooled"] == ["think", "answer", "generated"]
    run_cli("export-rankings", run, "--criterion", "gate-mass", "--out", tmp_path / "ta", check=True)
    exported = json.loads((tmp_path / "ta" / "law.json").read_text())
    assert list(exported) == ["layer_0", "layer_1", "layer_2"] and sorted(exported["layer_1"]) == list(range(8))
    for args in (
        ["analyze", tmp_path / "missing"],
        ["analyze", run, "--domains", "poetry"],
        ["analyze", run, "--criteria", "magic"],
        ["analyze", run, "--criteria", "reap"],
        ["export-rankings", run, "--criterion", "ean", "--out", tmp_path / "x"],
    ):
        proc = run_cli(*args)
        assert_clean_error(proc)
    assert "norms" in run_cli("analyze", run, "--criteria", "reap").stderr


def test_cli_classify_train_and_apply(tmp_path):
    train = token_routed_run(tmp_path / "a", seed=7, domain_shift=1.5)
    other = token_routed_run(tmp_path / "b", seed=7, domain_shift=1.5, n_prompts_per_domain=4, data_seed=99)
    proc = run_cli("classify", train, "--apply", other, "--folds", "3", "--out", tmp_path / "cls", check=True)
    report = json.loads((tmp_path / "cls" / "report.json").read_text())
    assert report["cross_validation"]["accuracy"] >= 0.9
    assert report["applied"]["accuracy_on_known_domains"] >= 0.9
    # the token-mix control sees the domains' different token mixes; misaligned rows would give chance level
    control = report["token_mix_baseline"]
    assert control["n_samples"] == report["cross_validation"]["n_samples"] and control["accuracy"] >= 0.8
    assert "accuracy" in proc.stdout
    assert_clean_error(run_cli("classify", train, "--window", "1"))
