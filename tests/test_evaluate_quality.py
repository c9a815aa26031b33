"""The quality benchmark's arithmetic on a hand-made sweep result (numbers checked by hand)."""

from __future__ import annotations

import pytest

from moeprint.evaluate.results import SweepResult
from moeprint.testbed.quality import check_targets, markdown_table, quality_rows


def _entry(domain, criterion, n, ppl, seed=None):
    per = {d: {"ppl_base": 2.0, "ppl_cut": v} for d, v in ppl.items()}
    return {
        "cut": {"domain": domain, "criterion": criterion, "n_experts": n, "seed": seed},
        "text": {"per_domain": per},
    }


def test_quality_rows_and_targets():
    doc = {
        "domains": ["law", "math", "bio"],
        "cuts": [
            # law's own frequency / reap plans and the other domains' plans, scored on every domain
            _entry("law", "frequency", 4, {"law": 3.0, "math": 4.0, "bio": 4.0}),
            _entry("law", "reap", 4, {"law": 2.5, "math": 3.0, "bio": 3.0}),
            _entry("math", "frequency", 4, {"law": 3.5, "math": 2.2, "bio": 4.0}),
            _entry("math", "reap", 4, {"law": 2.4, "math": 2.15, "bio": 3.0}),
            _entry("bio", "frequency", 4, {"law": 4.5, "math": 4.0, "bio": 2.2}),
            _entry("bio", "reap", 4, {"law": 2.8, "math": 3.0, "bio": 2.1}),
            _entry("", "random", 4, {"law": 5.0, "math": 5.0, "bio": 5.0}, seed=0),
            _entry("", "random", 4, {"law": 6.0, "math": 3.0, "bio": 5.0}, seed=1),
        ],
    }
    rows = {(r["domain"], r["criterion"]): r for r in quality_rows(SweepResult.from_doc(doc))}
    assert rows[("law", "frequency")]["increase"] == pytest.approx(1.0)
    assert rows[("law", "frequency")]["other_domain_increase"] == pytest.approx((1.5 + 2.5) / 2)
    assert rows[("law", "reap")]["other_domain_increase"] == pytest.approx((0.4 + 0.8) / 2)
    assert rows[("law", "random")]["increase"] == pytest.approx(3.5) and rows[("law", "random")]["n_seeds"] == 2
    targets = {(t["domain"], t["target"]): t["passed"] for t in check_targets(list(rows.values()), half=4, quarter=2)}
    assert targets[("law", "best criterion <= 0.6 x frequency at 4 experts")] is True  # 0.5 <= 0.6
    assert targets[("math", "best criterion <= 0.6 x frequency at 4 experts")] is False  # 0.15 > 0.6 * 0.2
    assert targets[("law", "reap: own domain beats other domains at 4 experts")] is True  # 0.5 < (0.4 + 0.8) / 2
    assert targets[("math", "frequency beats random at 4 experts")] is True  # 0.2 < (3 + 1) / 2
    assert len(targets) == 3 * (1 + 2 + 2)  # per domain: best-vs-frequency, 2 x random, 2 x own-vs-other
    table = markdown_table(list(rows.values()))
    assert "| law | 2.000 | 4 | +1.000 (+2.000) | +0.500 (+0.600) | +3.500 |" in table


def test_targets_report_misses():
    doc = {
        "domains": ["law", "math"],
        "cuts": [
            _entry("law", "frequency", 2, {"law": 3.0, "math": 3.0}),
            _entry("math", "frequency", 2, {"law": 2.5, "math": 3.0}),
            _entry("", "random", 2, {"law": 2.9, "math": 3.5}, seed=0),
        ],
    }
    targets = {
        (t["domain"], t["target"]): t for t in check_targets(quality_rows(SweepResult.from_doc(doc)), half=4, quarter=2)
    }
    assert targets[("law", "frequency beats random at 2 experts")]["passed"] is False  # 1.0 vs 0.9
    miss = targets[("law", "frequency: own domain beats other domains at 2 experts")]
    assert miss["passed"] is False and "own +1.000 vs other +0.500" in miss["detail"]
