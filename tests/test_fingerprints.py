"""analyze.fingerprints, the one reader and writer of RUN/fingerprints/: what `analyze` writes reads back as
the sums, rankings and statistics a plain loop over the trace rows gives."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from moeprint.analyze import AnalyzeSettings, analyze_run, fingerprints
from moeprint.errors import MoeprintError
from synthetic_runs import token_routed_run

L, E, K = 3, 8, 2
GENERATED = ("think", "answer", "generated")  # what `--segment generated` pools


def _loop_sums(run, domain: str | None, segments) -> dict[str, np.ndarray]:
    """Sums over the trace rows of one domain (None = every row) in `segments`, as Python loops."""
    sums = {name: np.zeros((L, E)) for name in ("tokens", "weight_sum", "norm_sum", "weight_norm_sum")}
    n_tokens = 0
    for part in sorted((run / "traces").glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            if (domain is not None and row["domain"] != domain) or row["segment"] not in segments:
                continue
            n_tokens += 1
            for layer in range(L):
                for j in range(K):
                    e, w, n = (
                        row["ids"][layer * K + j],
                        row["weights"][layer * K + j],
                        row["expert_norms"][layer * K + j],
                    )
                    sums["tokens"][layer, e] += 1
                    sums["weight_sum"][layer, e] += w
                    sums["norm_sum"][layer, e] += n
                    sums["weight_norm_sum"][layer, e] += w * n
    sums["n_tokens"] = n_tokens
    return sums


def _ranked(scores: np.ndarray) -> list[list[int]]:
    return [sorted(range(E), key=lambda e: (-scores[layer, e], e)) for layer in range(L)]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    run = token_routed_run(
        tmp_path_factory.mktemp("fp") / "run", seed=3, domain_shift=0.5, n_prompts_per_domain=3, with_norms=True
    )
    settings = AnalyzeSettings(
        segment="generated", criteria=("frequency", "gate-mass", "reap-sum"), n_perm=9, n_boot=5, token_perm=9
    )
    analyze_run(run, settings, progress=False)
    return run


def test_pooled_usage_reads_back_the_loop_sums(analyzed):
    manifest, usage_of = fingerprints.load_fingerprints(analyzed)
    assert manifest["kind"] == "fingerprints" and manifest["segments_pooled"] == list(GENERATED)
    assert manifest["rankings"] == {c: ["all", "law", "math"] for c in ("frequency", "gate-mass", "reap-sum")}
    for domain in ("law", "math", None):
        expected, got = _loop_sums(analyzed, domain, GENERATED), usage_of(domain)
        assert got.tokens.tolist() == expected["tokens"].astype(int).tolist()
        assert got.n_tokens == expected["n_tokens"] and got.layer_tokens.tolist() == [expected["n_tokens"]] * L
        for name in ("weight_sum", "norm_sum", "weight_norm_sum"):
            np.testing.assert_allclose(getattr(got, name), expected[name], rtol=1e-6, err_msg=name)


def test_segment_usage_reads_back_each_raw_segment(analyzed):
    usage = fingerprints.read_segment_usage(analyzed / "fingerprints", L, E)
    assert set(usage) == {"all", "law", "math"}
    for segment in ("prompt", "think", "answer"):
        expected, got = _loop_sums(analyzed, "math", (segment,)), usage["math"][segment]
        assert got.tokens.tolist() == expected["tokens"].astype(int).tolist(), segment
        assert got.layer_tokens.tolist() == [expected["n_tokens"]] * L
        np.testing.assert_allclose(got.weight_norm_sum, expected["weight_norm_sum"], rtol=1e-6)
    everything = _loop_sums(analyzed, None, ("prompt", "think", "answer", "generated"))
    assert usage["all"]["all"].tokens.tolist() == everything["tokens"].astype(int).tolist()


def test_rankings_read_back_as_the_loop_orders_them(analyzed):
    fp = analyzed / "fingerprints"
    assert fingerprints.ranked_criteria(fp) == ["frequency", "gate-mass", "reap-sum"]
    assert fingerprints.ranked_domains(fp, "frequency") == ["all", "law", "math"]
    law = _loop_sums(analyzed, "law", GENERATED)
    rankings = fingerprints.read_rankings(fp, "law")
    assert rankings["frequency"] == _ranked(law["tokens"])
    assert rankings["gate-mass"] == _ranked(law["weight_sum"])
    assert rankings["reap-sum"] == _ranked(law["weight_norm_sum"])
    path = fingerprints.ranking_path(fp, "gate-mass", "law")
    assert path == fp / "rankings" / "gate-mass" / "law.json"
    assert json.loads(path.read_text()) == {f"layer_{i}": r for i, r in enumerate(_ranked(law["weight_sum"]))}


def test_stats_read_back_and_an_incomplete_folder_is_refused(analyzed, tmp_path):
    stats = fingerprints.read_stats(analyzed / "fingerprints")
    assert stats["segment"] == "generated" and stats["domains"]["law"]["n_prompts"] == 3
    (tmp_path / "fingerprints").mkdir()
    (tmp_path / "fingerprints" / "usage.parquet").write_bytes(b"")
    with pytest.raises(MoeprintError, match="no complete fingerprints"):
        fingerprints.read_usage_table(tmp_path / "fingerprints")
    assert fingerprints.read_stats(tmp_path / "fingerprints") is None
