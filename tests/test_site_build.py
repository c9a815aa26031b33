"""`moeprint site` without a browser: files written, numbers vs independent loops, bad input, atomicity."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from conftest import assert_clean_error, run_cli
from moeprint.analyze.stats import two_sample_layer_tests
from moeprint.io.run import open_run
from moeprint.report import aggregate
from moeprint.report.build import build_site
from site_runs import E, K, L, make_run, plain_usage, read_data_js, trace_rows

ASSETS = Path(__file__).resolve().parents[1] / "src" / "moeprint" / "report" / "assets"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def site(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    proc = run_cli("site", run_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    return out


def test_cli_writes_pages_assets_and_data(site, run_dir):
    for name in [
        "index.html",
        "comparison.html",
        "manifest.json",
        "data/meta.js",
        "data/prompts.js",
        "data/plans.js",
        "assets/common.js",
        "assets/style.css",
    ]:
        assert (site / name).is_file(), name
    meta = read_data_js(site / "data" / "meta.js")
    assert meta["run"]["numLayers"] == L and meta["run"]["numExperts"] == E and meta["run"]["topK"] == K
    assert [d["name"] for d in meta["runs"][0]["domains"]] == ["all", "law", "math"]
    assert len(list((site / "data").glob("prompt-*.js"))) == 6
    assert meta["run"]["nTokens"] == sum(1 for r in trace_rows(run_dir) if r["ids"])


def test_domain_files_hold_the_counts_of_the_real_analyze_stage(tmp_path):
    """record-shaped traces -> the real `moeprint analyze` -> `moeprint site`: the page data equal plain loops
    over the trace rows (the fingerprints are analyze's own, not a fixture's)."""
    run = make_run(tmp_path, with_fingerprints=False, unrouted_prompt=False)
    run_cli("analyze", run, "--no-stats", check=True)
    site = tmp_path / "site"
    run_cli("site", run, "--out", site, check=True)
    expected = plain_usage(trace_rows(run))
    meta = read_data_js(site / "data" / "meta.js")
    assert meta["run"]["usageSource"].startswith("fingerprints")
    for entry in meta["runs"][0]["domains"]:
        data = read_data_js(site / "data" / entry["file"])
        for seg, u in data["segments"].items():
            tokens, mass, n = expected[(entry["name"], seg)]
            assert u["tokens"] == tokens
            assert np.allclose(u["mass"], mass, atol=1e-6)
            assert u["layerTokens"] == [n[0]] * L


def test_usage_from_traces_equals_plain_loops(run_dir):
    """The fallback when fingerprints are missing: numpy aggregation vs a plain loop over the rows."""
    tr = aggregate.read_traces(open_run(run_dir), L, K)
    counts, mass, routed = aggregate.per_prompt_counts(tr, E)
    pooled = aggregate.pool(counts, mass, routed, np.ones(len(tr.prompt_ids), bool))
    expected = plain_usage(trace_rows(run_dir))
    for seg, u in pooled.items():
        tokens, m, n = expected[("all", seg)]
        assert u.tokens.tolist() == tokens
        assert np.allclose(u.weight_sum, m, atol=1e-5)
        assert u.layer_tokens.tolist() == [n[0]] * L


def test_site_without_fingerprints_computes_them(tmp_path):
    run = make_run(tmp_path, with_fingerprints=False)
    out = build_site(run, tmp_path / "site")
    meta = read_data_js(out / "data" / "meta.js")
    assert meta["run"]["usageSource"].startswith("traces")
    math = next(d for d in meta["runs"][0]["domains"] if d["name"] == "math")
    tokens, _, _ = plain_usage(trace_rows(run))[("math", "think")]
    assert read_data_js(out / "data" / math["file"])["segments"]["think"]["tokens"] == tokens


def test_prompt_files_carry_each_tokens_exact_routing(site, run_dir):
    """Decode the packed routing of every prompt file and compare it row by row with the parquet."""
    rows = sorted(trace_rows(run_dir), key=lambda r: (r["prompt_id"], r["position"]))
    index = read_data_js(site / "data" / "prompts.js")
    for prow in index["rows"]:
        info = dict(zip(index["columns"], prow))
        data = read_data_js(site / "data" / info["file"])
        mine = [r for r in rows if r["prompt_id"] == data["promptId"]]
        assert data["tokens"] == [r["token"] for r in mine]
        assert data["positions"] == [r["position"] for r in mine]
        ids = np.frombuffer(base64.b64decode(data["ids"]), dtype=np.uint8).reshape(-1, L * K)
        w = np.frombuffer(base64.b64decode(data["weights"]), dtype="<u2").reshape(-1, L * K) / data["weightScale"]
        routed = [r for r in mine if r["ids"]]
        assert data["routed"] == "".join("1" if r["ids"] else "0" for r in mine)
        assert ids.tolist() == [r["ids"] for r in routed]
        assert np.allclose(w, [r["weights"] for r in routed], atol=0.5e-4)


def test_domain_tests_match_a_direct_computation(site, run_dir):
    """vs rest: chi-square by the textbook formula, BH by hand, TVD, Cramér's V."""
    expected = plain_usage(trace_rows(run_dir))
    meta = read_data_js(site / "data" / "meta.js")
    math = next(d for d in meta["runs"][0]["domains"] if d["name"] == "math")
    t = read_data_js(site / "data" / math["file"])["vsRest"]
    a = np.array(expected[("math", "all")][0], float)
    b = np.array(expected[("law", "all")][0], float)  # two domains: the rest of math is law
    p = []
    for layer in range(L):
        table = np.stack([a[layer], b[layer]])
        table = table[:, table.sum(0) > 0]
        exp = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        chi2 = ((table - exp) ** 2 / exp).sum()
        df = table.shape[1] - 1
        p.append(sps.chi2.sf(chi2, df))
        assert t["chi2"][layer] == pytest.approx(chi2, rel=1e-5)
        assert t["df"][layer] == df
        assert t["cramers_v"][layer] == pytest.approx(np.sqrt(chi2 / table.sum()), rel=1e-4)
        tvd = 0.5 * np.abs(a[layer] / a[layer].sum() - b[layer] / b[layer].sum()).sum()
        assert t["tvd"][layer] == pytest.approx(tvd, rel=1e-4)
    order = np.argsort(p)
    q = np.empty(L)
    running = 1.0
    for rank in range(L - 1, -1, -1):
        running = min(running, p[order[rank]] * L / (rank + 1))
        q[order[rank]] = running
    assert np.allclose(t["q"], q, rtol=1e-4)


def test_layer_tests_skip_empty_sides():
    a = np.array([[3, 0, 1], [0, 0, 0]])
    b = np.array([[1, 2, 0], [1, 1, 0]])
    out = two_sample_layer_tests(a, b)
    assert out["df"] == [2, 0] and np.isnan(out["chi2"][1]) and np.isfinite(out["q"][0])


def test_compare_second_run_and_shape_mismatch(tmp_path, run_dir):
    other = make_run(tmp_path, seed=1, name="other")
    out = build_site(run_dir, tmp_path / "site", compare=(str(other),))
    meta = read_data_js(out / "data" / "meta.js")
    assert [r["name"] for r in meta["runs"]] == ["synthetic", "other"]
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["num_experts"] = 16
    (other / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("site", run_dir, "--out", tmp_path / "site2", "--compare", other)
    assert_clean_error(proc)
    assert "same model shape" in proc.stderr
    assert not (tmp_path / "site2").exists()


def test_bad_inputs_give_one_clear_line(tmp_path, run_dir):
    assert_clean_error(run_cli("site", tmp_path / "nope"))
    (tmp_path / "half").mkdir()
    proc = run_cli("site", tmp_path / "half")
    assert_clean_error(proc)
    assert "manifest.json" in proc.stderr
    broken = make_run(tmp_path, name="broken")
    (broken / "traces" / "part-00001.parquet").write_bytes(b"not parquet")
    proc = run_cli("site", broken, "--out", tmp_path / "out")
    assert_clean_error(proc)
    assert "part-00001.parquet" in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    proc = run_cli("site", run_dir, "--out", tmp_path / "mine")
    assert_clean_error(proc)
    assert "not a moeprint site" in proc.stderr and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_failed_rebuild_keeps_the_previous_site(tmp_path):
    run = make_run(tmp_path)
    out = build_site(run, tmp_path / "site")
    before = (out / "data" / "meta.js").read_text()
    (run / "traces" / "part-00000.parquet").write_bytes(b"junk")
    assert_clean_error(run_cli("site", run, "--out", out))
    assert (out / "data" / "meta.js").read_text() == before


def test_assets_never_touch_the_network_or_inner_html():
    for path in ASSETS.iterdir():
        text = path.read_text()
        assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text, path.name
        assert "fetch(" not in text and "XMLHttpRequest" not in text and "eval(" not in text, path.name
        urls = re.findall(r"https?://[^\s'\"]+", text)
        assert all(u == "http://www.w3.org/2000/svg" for u in urls), (path.name, urls)


def test_router_entropy_from_recorded_logits(tmp_path, tiny_model_dir):
    """A run recorded with --logits: per layer, the mean entropy of softmax(logits) over tokens, vs scipy."""
    from moeprint.record import RecordSettings, record_run

    run = record_run(
        tiny_model_dir,
        "builtin",
        tmp_path / "run",
        RecordSettings(max_new_tokens=4, batch_size=2, logits=True),
        limit=2,
        progress=False,
    )
    out = build_site(run, tmp_path / "site")
    meta = read_data_js(out / "data" / "meta.js")
    got = read_data_js(out / "data" / meta["runs"][0]["domains"][0]["file"])["routerEntropy"]
    num_layers = meta["run"]["numLayers"]
    per_layer = [[] for _ in range(num_layers)]
    for r in trace_rows(run):
        z = np.array(r["logits"], dtype=np.float64).reshape(num_layers, -1)
        for layer in range(num_layers):
            p = np.exp(z[layer] - z[layer].max())
            per_layer[layer].append(sps.entropy(p / p.sum(), base=2))
    assert np.allclose(got, [np.mean(v) for v in per_layer], rtol=1e-5)
