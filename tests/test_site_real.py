"""The site built from the real published gpt-oss-20b data shows it correctly (checked against the source JSON,
not against moeprint's importer)."""

from __future__ import annotations

import gzip
import json

import pytest

from moeprint.report.build import build_site
from test_site_browser import CHROMIUM, Page, browser  # noqa: F401  (fixture)

FOLDERS = {"gpqa_diamond/Molecular Biology", "mmlu_dev/abstract_algebra"}
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]


def _json(path):
    return json.load(gzip.open(path, "rt")) if str(path).endswith(".gz") else json.loads(path.read_text())


@pytest.fixture(scope="module")
def real_site(shared_data, tmp_path_factory):
    importer = pytest.importorskip(
        "moeprint.importers.fingerprinting", reason="the importer (analyze stage) is not merged"
    )
    root = tmp_path_factory.mktemp("real")
    importer.import_fingerprinting(shared_data, root / "run", folders=FOLDERS, progress=False)
    from moeprint.analyze import AnalyzeSettings, analyze_run

    settings = AnalyzeSettings(
        criteria=("frequency", "reference"), n_perm=9, n_boot=5, token_perm=9, coactivation=False
    )
    analyze_run(root / "run", settings, progress=False)
    return build_site(root / "run", root / "site")


@pytest.fixture
def tab(browser):  # noqa: F811
    t = Page(browser)
    yield t
    t.ctx.close()


def test_token_view_shows_the_published_routing_of_each_token(tab, real_site, shared_data):
    """A generated token shows the routing stored under its own position (router_data key token_{prompt_len + k})."""
    src = shared_data / "data" / "gpqa_diamond" / "Molecular Biology" / "False_True_examples.json.gz"
    ex = _json(src)
    prompt_len = len(ex["full_text"]) - len(ex["generated_only"])
    routing = {k: v for entry in ex["router_data"] for k, v in entry.items()}
    tab.goto(real_site, "index.html", "#view=tokens&prompt=" + "gpqa_diamond/Molecular%20Biology/False_True")
    tab.page.wait_for_selector("#tokens button.tok")
    for k in (0, 1, 200, len(ex["generated_only"]) - 2):
        pos = prompt_len + k
        button = f"#tokens button.tok[data-pos='{pos}']"
        assert tab.page.text_content(button) == (ex["generated_only"][k].replace("\n", "↵").replace("\t", "→") or "∅")
        tab.page.click(button)
        shown = tab.page.eval_on_selector_all(
            "#token-routing tbody tr", "trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent))"
        )
        for layer, cells in enumerate(shown):
            src_layer = routing[f"token_{pos}"][f"layer_{layer}"]
            assert [int(cells[1 + 2 * j]) for j in range(4)] == src_layer["selected_experts"]
            for j in range(4):
                assert abs(float(cells[2 + 2 * j]) - src_layer["selected_probs"][j]) <= 0.5e-4 + 1e-7
    # the last generated token was never fed to the model: it has no routing, and says so
    assert (
        tab.page.query_selector(f"#tokens button.tok[data-pos='{prompt_len + len(ex['generated_only']) - 1}']") is None
    )
    assert tab.errors == []


def test_published_summaries_are_shown_as_published(tab, real_site, shared_data):
    """Comparison page, source 'published summaries': the share of each expert equals the token-weighted
    count_frequency of the source summary files."""
    # the category pools every dataset folder named "Molecular Biology" that domains.json puts in science
    domains = json.loads((shared_data / "domains.json").read_text())
    folders = [shared_data / "data" / f for f in domains["science"] if f.split("/", 1)[1] == "Molecular Biology"]
    layer = 3
    num = {e: 0.0 for e in range(32)}
    den = 0.0
    files = [f for folder in folders if folder.is_dir() for f in sorted(folder.glob("*.json*"))]
    assert len({f.parent for f in files}) >= 2  # several datasets pooled
    for f in files:
        if f.name.endswith("_examples.json.gz"):
            continue
        s = _json(f)
        n = s.get("num_think_tokens", 0) * s["sample_count"]
        an = s.get("think_expert_analytics") or {}
        if f"layer_{layer}" not in an:
            continue
        den += n
        for e, v in an[f"layer_{layer}"].items():
            num[int(e)] += v["count_frequency"] * n
    tab.goto(
        real_site,
        "comparison.html",
        f"#arun=1&akind=category&aname=science/Molecular%20Biology&aseg=think&bkind=rest&bseg=think&layer={layer}",
    )
    tab.page.wait_for_selector("#expert-tests")
    head = tab.page.eval_on_selector_all("#expert-tests thead th", "ths => ths.map(t => t.textContent)")
    rows = tab.page.eval_on_selector_all(
        "#expert-tests tbody tr", "trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent))"
    )
    assert len(rows) == 32
    for cells in rows:
        rec = dict(zip(head, cells))
        assert int(rec["layer"]) == layer
        expected = num[int(rec["expert"])] / den
        assert float(rec["share A"]) == float(f"{expected:.4g}"), (rec, expected)
    assert tab.errors == []


def test_reference_rankings_equal_the_published_files(tab, real_site, shared_data):
    """Overview, criterion `reference` (analyze's replay of the published recipe from all summaries): the
    experts listed per layer are the first 8 of the published topical_analytics/<domain>.json."""
    for domain in ("science", "math"):
        published = _json(shared_data / "topical_analytics" / f"{domain}.json")
        tab.goto(real_site, "index.html", f"#view=overview&domain={domain}&criterion=reference")
        tab.page.wait_for_selector("#rankings")
        shown = tab.page.eval_on_selector_all("#rankings tbody tr", "trs => trs.map(tr => tr.children[1].textContent)")
        assert len(shown) == 24
        for layer, text in enumerate(shown):
            assert [int(x) for x in text.split(", ")] == published[f"layer_{layer}"][:8]
    assert tab.errors == []
