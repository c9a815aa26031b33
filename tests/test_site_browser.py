"""The site in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), from file://."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from moeprint.report.build import build_site
from site_runs import IMG_TOKEN, SCRIPT_TOKEN, K, L, make_run, plain_usage, trace_rows

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    run = make_run(root)
    return run, build_site(run, root / "site")


class Page:
    """A page that records console errors, uncaught exceptions and every URL it requested."""

    def __init__(self, browser):
        self.ctx = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def goto(self, site: Path, page: str, fragment: str = "") -> None:
        """A fresh document every time (a hash-only change would keep the old DOM around while re-rendering)."""
        self.page.goto("about:blank")
        self.page.goto((site / page).as_uri() + fragment)
        self.page.wait_for_load_state("load")


@pytest.fixture
def tab(browser):
    t = Page(browser)
    yield t
    t.ctx.close()


def test_every_view_loads_without_console_errors_or_network(tab, built):
    _, site = built
    views = [
        ("", "#top-experts"),
        ("#view=domain&domain=law", "#analyze-stats"),
        ("#view=tokens", "#tokens button.tok"),
        ("#view=plans", "#evals"),
    ]
    for fragment, selector in views:
        tab.goto(site, "index.html", fragment)
        tab.page.wait_for_selector(selector)
    # plans and evaluate results: the plan's kept experts, every number of evals/*.json, one curve per field
    assert tab.page.eval_on_selector_all("#plans tbody td", "tds => tds.map(t => t.textContent)") == [
        "law-4.json",
        "law",
        "frequency",
        "4",
    ]
    evals = tab.page.eval_on_selector_all(
        "#evals tbody tr", "trs => trs.map(tr => tr.children[1].textContent + '=' + tr.children[2].textContent)"
    )
    assert "sweep[1].ppl=2.5" in evals and len(evals) == 9  # a JSON of unknown schema: every number
    cut = tab.page.eval_on_selector_all("#cuts tbody td", "tds => tds.map(t => t.textContent)")
    assert cut[:7] == ["law-4.json", "law-4", "law", "frequency", "4", "1.25", "1.5"]
    titles = tab.page.eval_on_selector_all("#retention-charts figcaption", "fs => fs.map(f => f.textContent)")
    assert any(t.startswith("sweep/results.json: law, in-domain perplexity") for t in titles)
    points = tab.page.eval_on_selector_all("#retention-charts circle title", "ts => ts.map(t => t.textContent)")
    assert "random (mean of seeds): 2 → 3" in points  # (2 + 1/2 + 3 + 1/2) / 2
    assert "frequency: 4 → 1.25" in points
    assert tab.page.eval_on_selector_all("#view-plans svg polyline", "ps => ps.length") == 2 + 4
    # the analyze stage's stats.json, shown under its own key paths
    tab.goto(site, "index.html", "#view=domain&domain=law")
    tab.page.wait_for_selector("#analyze-stats")
    head = tab.page.eval_on_selector_all("#analyze-stats thead th", "ths => ths.map(t => t.textContent)")
    assert head == [
        "layer",
        "usage_token_level.g",
        "usage_token_level.p",
        "usage_token_level.q",
        "stability.jaccard_vs_full_mean",
    ]
    assert tab.page.text_content("#analyze-stats tbody tr:nth-child(3) td:nth-child(3)") == "1.00e-9"
    tab.goto(site, "comparison.html", "#akind=domain&aname=math&bkind=domain&bname=law")
    tab.page.wait_for_selector("#layer-tests")
    assert tab.errors == []
    assert tab.requests and all(u.startswith("file://") for u in tab.requests), tab.requests


def test_clicked_token_shows_exactly_its_recorded_routing(tab, built):
    run, site = built
    rows = {(r["prompt_id"], r["position"]): r for r in trace_rows(run)}
    tab.goto(site, "index.html", "#view=tokens&prompt=p4")
    for i in (0, 7, 14):
        tab.page.click(f"#tokens button.tok[data-i='{i}']")
        tab.page.wait_for_selector("#token-routing")
        meta_text = tab.page.text_content("#token-meta")
        position = int(meta_text.split("position ")[1].split(" ")[0])
        row = rows[("p4", position)]
        assert position == i  # p4 has rows 0..n-1
        shown = tab.page.eval_on_selector_all(
            "#token-routing tbody tr", "trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent))"
        )
        assert len(shown) == L
        for layer, cells in enumerate(shown):
            assert int(cells[0]) == layer
            for j in range(K):
                assert int(cells[1 + 2 * j]) == row["ids"][layer * K + j]
                assert abs(float(cells[2 + 2 * j]) - row["weights"][layer * K + j]) <= 0.5e-4 + 1e-7
        assert tab.page.get_attribute(f"#tokens button.tok[data-i='{i}']", "aria-pressed") == "true"
    assert "token=14" in tab.page.url  # selection is in the shareable URL
    # keyboard: the selected token is the one in the Tab order; the right arrow selects the next token
    tab.page.focus("#tokens button.tok[data-i='14']")
    tab.page.keyboard.press("ArrowLeft")
    assert tab.page.evaluate("document.activeElement.dataset.i") == "13"
    assert tab.page.get_attribute("#tokens button.tok[data-i='13']", "aria-pressed") == "true"
    assert tab.page.eval_on_selector_all("#tokens button.tok", "bs => bs.filter(b => b.tabIndex === 0).length") == 1


def test_token_colour_is_the_chosen_expert_at_the_selected_layer(tab, built):
    run, site = built
    rows = sorted((r for r in trace_rows(run) if r["prompt_id"] == "p0"), key=lambda r: r["position"])
    tab.goto(site, "index.html", "#view=tokens&prompt=p0&layer=2")
    experts = tab.page.eval_on_selector_all("#tokens button.tok", "bs => bs.map(b => b.dataset.expert)")
    for r, shown in zip(rows, experts):
        w = r["weights"][2 * K : 3 * K]
        assert int(shown) == r["ids"][2 * K + int(np.argmax(w))]


def test_hostile_tokens_render_as_text(tab, built):
    _, site = built
    tab.goto(site, "index.html", "#view=tokens&prompt=p0")  # p0 holds both hostile tokens
    texts = tab.page.eval_on_selector_all("#tokens button.tok", "bs => bs.map(b => b.textContent)")
    assert SCRIPT_TOKEN in texts and IMG_TOKEN in texts
    assert tab.page.evaluate("document.querySelectorAll('#tokens script, #tokens img, main img').length") == 0
    i = texts.index(IMG_TOKEN)
    tab.page.click(f"#tokens button.tok[data-i='{i}']")
    tab.page.wait_for_timeout(200)
    assert tab.page.evaluate("window.__pwned") is None
    assert tab.page.text_content("#token-detail h2") == "Token " + json.dumps(IMG_TOKEN)  # shown as a JSON string
    assert tab.errors == []


def test_switching_domain_changes_the_heatmap(tab, built):
    _, site = built
    tab.goto(site, "index.html", "#view=overview&domain=math")
    tab.page.wait_for_function("() => document.body.dataset.rendered === 'overview|math|all|share'")
    before = tab.page.evaluate("document.getElementById('overview-heatmap').toDataURL()")
    readout_math = tab.page.text_content("#overview-readout")
    tab.page.select_option("#ov-domain", "law")
    tab.page.wait_for_function("() => document.body.dataset.rendered === 'overview|law|all|share'")
    after = tab.page.evaluate("document.getElementById('overview-heatmap').toDataURL()")
    assert before != after
    # the readout (layer 0, expert 0) shows law's numbers from the fingerprints
    tokens, _, n = plain_usage(trace_rows(built[0]))[("law", "all")]
    readout = tab.page.text_content("#overview-readout")
    assert readout != readout_math and f"({tokens[0][0]} of {n[0]} tokens)" in readout
    tab.page.focus("#overview-heatmap")  # keyboard: arrows move the cursor and the readout follows
    tab.page.keyboard.press("ArrowDown")
    tab.page.keyboard.press("ArrowRight")
    assert f"layer 1, expert 1: share {tokens[1][1] / n[0]:.4g}" in tab.page.text_content("#overview-readout")


def test_csv_export_contains_the_numbers_shown(tab, built):
    _, site = built
    tab.goto(site, "comparison.html", "#akind=domain&aname=math&bkind=rest&bseg=all")
    tab.page.wait_for_selector("#layer-tests")
    shown = tab.page.eval_on_selector_all(
        "#layer-tests tbody tr", "trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent))"
    )
    headers = tab.page.eval_on_selector_all("#layer-tests thead th", "ths => ths.map(t => t.textContent)")
    with tab.page.expect_download() as dl:
        tab.page.click("button[data-export='layer_tests.csv']")
    data = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert len(data) == len(shown) == L
    for cells, rec in zip(shown, data):
        for h, cell in zip(headers, cells):
            value = float(rec[h])
            if h in ("layer", "tokens A", "tokens B", "df"):
                assert cell == rec[h]
            else:  # the page rounds for display: the CSV value rounded the same way gives the shown number
                mantissa = cell.lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0")
                assert float(cell) == float(f"{value:.{max(1, len(mantissa))}g}"), (h, cell, value)
    with tab.page.expect_download() as dl:
        tab.page.click("button[data-export='expert_tests.json']")
    assert '"shareA"' in Path(dl.value.path()).read_text()


def test_comparison_tests_match_scipy(tab, built):
    """The page's chi-square survival function, per-layer tests and BH against scipy."""
    run, site = built
    tab.goto(site, "comparison.html", "#akind=domain&aname=math&bkind=domain&bname=law")
    tab.page.wait_for_selector("#layer-tests")
    grid = [(0.5, 1), (3.84, 1), (10.0, 3), (31.0, 31), (120.0, 31), (1e-3, 7), (500.0, 127), (80.0, 2), (2.0, 60)]
    got = tab.page.evaluate("g => g.map(([x, df]) => moeprint.stats.chi2sf(x, df))", grid)
    for (x, df), p in zip(grid, got):
        assert p == pytest.approx(sps.chi2.sf(x, df), rel=1e-9, abs=1e-300)
    ps = [0.01, 0.04, 0.03, 0.2, 0.5, 0.001]
    assert np.allclose(tab.page.evaluate("p => moeprint.stats.bh(p)", ps), sps.false_discovery_control(ps), rtol=1e-12)
    usage = plain_usage(trace_rows(run))
    a, b = np.array(usage[("math", "all")][0]), np.array(usage[("law", "all")][0])
    for layer in range(L):
        t = tab.page.evaluate("([a, b]) => moeprint.stats.layerTest(a, b)", [a[layer].tolist(), b[layer].tolist()])
        table = np.stack([a[layer], b[layer]])[:, (a[layer] + b[layer]) > 0]
        chi2, p, df, _ = sps.chi2_contingency(table, correction=False)
        g, pg, _, _ = sps.chi2_contingency(table, correction=False, lambda_="log-likelihood")
        assert (t["chi2"], t["p"], t["df"], t["g"], t["pG"]) == pytest.approx((chi2, p, df, g, pg), rel=1e-9)
    z = tab.page.evaluate("moeprint.stats.expertTest(30, 100, 10, 80)")
    pooled = 40 / 180
    z_ref = (0.3 - 0.125) / np.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 80))
    assert z["z"] == pytest.approx(z_ref, rel=1e-12) and z["p"] == pytest.approx(2 * sps.norm.sf(z_ref), rel=1e-9)


def test_comparison_warns_about_overlapping_selections(tab, built):
    _, site = built
    tab.goto(site, "comparison.html", "#akind=domain&aname=math&bkind=domain&bname=all")
    tab.page.wait_for_selector("#overlap-warning")
    tab.goto(site, "comparison.html", "#akind=domain&aname=math&bkind=rest")
    tab.page.wait_for_selector("#layer-tests")
    assert tab.page.query_selector("#overlap-warning") is None


def test_url_state_restores_a_shared_link(tab, built):
    _, site = built
    tab.goto(site, "index.html", "#view=tokens&prompt=p3&token=6&layer=1")
    tab.page.wait_for_selector("#token-routing")
    assert "position 6" in tab.page.text_content("#token-meta")
    assert tab.page.input_value("#tk-layer") == "1"
    # p3's prompt rows carry no routing (as in imported traces): shown as such, no table
    tab.page.click("#tokens button.tok[data-i='0']")
    assert tab.page.query_selector("#token-routing") is None
    assert "No routing recorded" in tab.page.text_content("#token-detail")


def test_pages_work_from_a_static_web_server(tab, built):
    """Same pages over http:// (any static host): the CSP and the script-loaded data work there too."""
    import functools
    import http.server
    import threading

    _, site = built
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        tab.page.goto(base + "index.html#view=tokens&prompt=p2&token=3")
        tab.page.wait_for_selector("#token-routing")
        tab.page.goto(base + "comparison.html#aname=law&bkind=rest")
        tab.page.wait_for_selector("#expert-tests")
        assert tab.errors == []
        assert all(u.startswith(base) for u in tab.requests), tab.requests
    finally:
        server.shutdown()


def test_recorded_run_shows_decoded_tokens_and_their_routing(tab, tiny_model_dir, tmp_path):
    """A run recorded from a tiny model: token text decoded with the run's tokenizer, prompt and generated
    tokens both carry routing, and a clicked token shows its own trace row."""
    from transformers import AutoTokenizer

    from moeprint.record import RecordSettings, record_run

    run = record_run(
        tiny_model_dir,
        "builtin",
        tmp_path / "run",
        RecordSettings(max_new_tokens=6, batch_size=3),
        limit=3,
        progress=False,
    )
    site = build_site(run, tmp_path / "site")
    rows = sorted(trace_rows(run), key=lambda r: (r["prompt_id"], r["position"]))
    pid = rows[0]["prompt_id"]
    mine = [r for r in rows if r["prompt_id"] == pid]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tab.goto(site, "index.html", "#view=tokens&prompt=" + pid)
    tab.page.wait_for_selector("#tokens button.tok")
    texts = tab.page.eval_on_selector_all("#tokens button.tok", "bs => bs.map(b => b.textContent)")
    expected = [tok.decode([r["token_id"]]).replace("\n", "↵").replace("\t", "→") or "∅" for r in mine]
    assert texts == expected
    segs = tab.page.eval_on_selector_all("#tokens .seglabel", "ss => ss.map(s => s.textContent)")
    assert segs[0] == "prompt" and len(segs) >= 2
    num_layers = json.loads((run / "manifest.json").read_text())["num_layers"]
    for i in (1, len(mine) - 1):  # a prompt token and the last generated token
        tab.page.click(f"#tokens button.tok[data-i='{i}']")
        shown = tab.page.eval_on_selector_all(
            "#token-routing tbody tr", "trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent))"
        )
        ids = [int(c) for cells in shown for c in cells[1::2]]
        weights = [float(c) for cells in shown for c in cells[2::2]]
        assert len(shown) == num_layers and ids == mine[i]["ids"]
        assert np.allclose(weights, mine[i]["weights"], atol=0.5e-4 + 1e-7)
    assert tab.errors == []
