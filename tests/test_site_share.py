"""The site as a shareable artifact, in headless Chromium: no local paths, a valid default comparison,
finished / unfinished filters re-aggregated in the page, and the per-domain trade-off view."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from moeprint.report.build import build_site
from site_runs import PROMPTS, E, L, make_run, plain_usage, trace_rows
from test_site_browser import CHROMIUM, Page, browser  # noqa: F401 - the module-scoped browser fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]
FINISHED = {pid: fin for pid, _d, _s, _c, fin in PROMPTS}


def _reap_sums(tokens: list[list[int]], domain: str) -> list[list[float]]:
    """Made-up REAP sums (gate weight x norm) that rank experts differently from their token counts."""
    bonus = 3.0 if domain == "law" else 1.0
    return [[tokens[layer][e] * (1.0 + ((e * 5 + layer) % 8)) * bonus for e in range(E)] for layer in range(L)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A run whose manifest names a local model folder and whose fingerprints carry REAP sums."""
    root = tmp_path_factory.mktemp("share")
    run = make_run(root)
    model = root / "models" / "my-moe"
    model.mkdir(parents=True)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "model": str(model), "has_norms": True}))
    usage_path = run / "fingerprints" / "usage.parquet"
    table = pq.read_table(usage_path)
    rows = table.to_pylist()
    counts = plain_usage(trace_rows(run))
    for r in rows:
        r["weight_norm_sum"] = _reap_sums(counts[(r["domain"], r["segment"])][0], r["domain"])[r["layer"]][r["expert"]]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), usage_path)
    return root, run, build_site(run, root / "site")


@pytest.fixture
def tab(browser):  # noqa: F811
    t = Page(browser)
    yield t
    t.ctx.close()


def _cells(tab, selector):
    return tab.page.eval_on_selector_all(
        selector + " tbody tr", "trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent))"
    )


def test_pages_hold_no_local_paths(tab, shared):
    root, run, site = shared
    for path in site.rglob("*"):
        if path.is_file() and path.name != "manifest.json":  # the site's own manifest records where it came from
            assert str(root) not in path.read_text(errors="replace"), path
    tab.goto(site, "index.html")
    tab.page.wait_for_selector("#top-experts")
    header = tab.page.text_content("#runinfo")
    assert "my-moe (local folder)" in header and str(root) not in header
    assert not tab.errors


def test_comparison_opens_on_a_domain_vs_the_rest(tab, shared):
    _, run, site = shared
    tab.goto(site, "comparison.html")
    tab.page.wait_for_selector("#layer-tests")
    assert tab.page.query_selector("#overlap-warning") is None
    assert tab.page.eval_on_selector("#b-kind", "s => s.value") == "rest"
    assert tab.page.eval_on_selector("#a-name", "s => s.value") == "law"  # the first domain, never `all`
    usage = plain_usage(trace_rows(run))
    own, everything = np.array(usage[("law", "all")][0]), np.array(usage[("all", "all")][0])
    shown = _cells(tab, "#layer-tests")
    for layer in range(L):
        table = np.stack([own[layer], everything[layer] - own[layer]])
        chi2, *_ = sps.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
        assert float(shown[layer][3]) == pytest.approx(chi2, rel=1e-3)
    assert not tab.errors


def _filtered_usage(run, keep):
    rows = [r for r in trace_rows(run) if keep(FINISHED[r["prompt_id"]])]
    return plain_usage(rows)


def _entropy(row):
    n = sum(row)
    return -sum(x / n * math.log2(x / n) for x in row if x > 0)


def test_overview_filters_by_finished_generations(tab, shared):
    _, run, site = shared
    usage = _filtered_usage(run, lambda fin: fin)
    tokens = usage[("math", "all")][0]
    tab.goto(site, "index.html", "#view=overview&domain=math&gen=finished")
    tab.page.wait_for_function("() => document.body.dataset.rendered === 'overview|math|all|share|finished'")
    shown = _cells(tab, "#top-experts")
    for layer in range(L):
        assert float(shown[layer][1]) == pytest.approx(_entropy(tokens[layer]), rel=1e-3)
        n = usage[("math", "all")][2][0]
        best = sorted(range(E), key=lambda e: (-tokens[layer][e], e))[:5]
        assert shown[layer][-1] == ", ".join(f"{e} ({float(f'{tokens[layer][e] / n:.3g}'):g})" for e in best)
    # switching the filter in the page re-aggregates: unfinished math is prompt p1 alone
    tab.page.select_option("#ov-gen", "unfinished")
    tab.page.wait_for_function("() => document.body.dataset.rendered === 'overview|math|all|share|unfinished'")
    tokens = _filtered_usage(run, lambda fin: not fin)[("math", "all")][0]
    shown = _cells(tab, "#top-experts")
    assert [float(r[1]) for r in shown] == pytest.approx([_entropy(tokens[layer]) for layer in range(L)], rel=1e-3)
    assert not tab.errors


def test_domain_view_tests_filtered_generations_in_the_page(tab, shared):
    _, run, site = shared
    usage = _filtered_usage(run, lambda fin: not fin)
    own, everything = np.array(usage[("law", "all")][0]), np.array(usage[("all", "all")][0])
    tab.goto(site, "index.html", "#view=domain&domain=law&gen=unfinished")
    tab.page.wait_for_selector("#domain-tests")
    shown = _cells(tab, "#domain-tests")
    ps = []
    for layer in range(L):
        table = np.stack([own[layer], everything[layer] - own[layer]])
        table = table[:, table.sum(axis=0) > 0]
        chi2, p, df, _ = sps.chi2_contingency(table, correction=False)
        ps.append(p)
        assert int(shown[layer][1]) == usage[("law", "all")][2][0]  # tokens of law's unfinished prompt
        assert float(shown[layer][2]) == pytest.approx(chi2, rel=1e-3) and int(shown[layer][3]) == df
    q = sps.false_discovery_control(ps)
    assert [float(r[5]) for r in shown] == pytest.approx(q.tolist(), rel=5e-3)  # shown with 3 digits
    assert tab.page.query_selector("#analyze-stats") is None  # computed over all generations: not shown filtered
    assert not tab.errors


def test_tradeoff_view_shares_and_retention(tab, shared):
    _, run, site = shared
    ranking = json.loads((run / "fingerprints" / "rankings" / "frequency" / "law.json").read_text())
    tokens = plain_usage(trace_rows(run))[("law", "all")][0]
    reap = _reap_sums(tokens, "law")
    sweep = json.loads((run / "evals" / "sweep" / "results.json").read_text())
    own = {
        c["cut"]["n_experts"]: 1 / c["text"]["per_domain"]["law"]["ppl_ratio"]
        for c in sweep["cuts"]
        if c["cut"]["criterion"] == "frequency"
    }
    rand: dict[int, list[float]] = {}
    for c in sweep["cuts"]:
        if c["cut"]["criterion"] == "random":
            rand.setdefault(c["cut"]["n_experts"], []).append(1 / c["text"]["per_domain"]["law"]["ppl_ratio"])
    tab.goto(site, "index.html", "#view=tradeoff&domain=law&criterion=frequency")
    tab.page.wait_for_function("() => document.body.dataset.rendered === 'tradeoff|law|frequency'")
    shown = _cells(tab, "#tradeoff-table")
    assert [int(r[0]) for r in shown] == list(range(1, E + 1))
    for n, row in zip(range(1, E + 1), shown):
        kept = [ranking[f"layer_{layer}"][:n] for layer in range(L)]
        traffic = sum(tokens[layer][e] for layer in range(L) for e in kept[layer]) / sum(map(sum, tokens))
        saliency = sum(reap[layer][e] for layer in range(L) for e in kept[layer]) / sum(map(sum, reap))
        assert float(row[1]) == pytest.approx(traffic, rel=1e-3) and float(row[2]) == pytest.approx(saliency, rel=1e-3)
        assert row[3] == (f"{own[n]:.4g}" if n in own else "-")
        assert row[4] == (f"{sum(rand[n]) / len(rand[n]):.4g}" if n in rand else "-")
    assert float(shown[-1][1]) == 1.0  # every expert kept holds all the traffic
    assert len(tab.page.query_selector_all("#tradeoff-chart polyline")) == 4
    assert not tab.errors
