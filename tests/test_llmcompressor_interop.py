"""llm-compressor interop: plans from its REAP reports, saliencies exported in the format its ExpertPruner reads.

The report files are written here from the schemas in llm-compressor's source: REAPPruningModifier's
`report_path` ({module name: retained ids}, keys in string order) and the saliency report
({"saliency": [[per expert] per MoE layer], "count": ...}).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from prune_helpers import assert_error_line, main_in_process
from synthetic_runs import token_routed_run


def _config_dir(path, **overrides):
    """A model folder with only config.json: planning reads the config, never weights."""
    config = {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "num_hidden_layers": 12,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        **overrides,
    }
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def _kept_report(path, kept_by_decoder_layer: dict[int, list[int]]):
    names = {f"model.layers.{layer}.mlp": ids for layer, ids in kept_by_decoder_layer.items()}
    path.write_text(json.dumps({name: names[name] for name in sorted(names)}))  # string order, as it writes
    return path


def test_plan_from_kept_report_equals_the_report(tmp_path):
    model = _config_dir(tmp_path / "model")
    rng = np.random.default_rng(0)
    kept = {layer: sorted(rng.choice(8, 5, replace=False).tolist()) for layer in range(12)}
    report = _kept_report(tmp_path / "reap_report.json", kept)
    assert list(json.loads(report.read_text()))[:3] == [
        "model.layers.0.mlp",
        "model.layers.1.mlp",
        "model.layers.10.mlp",
    ]
    out = tmp_path / "plan.json"
    run_cli("plan", "--from-llmcompressor", report, "--model", model, "--out", out, check=True)
    plan = json.loads(out.read_text())
    assert plan["kept"] == [kept[layer] for layer in range(12)]
    assert plan["n_experts"] == 5 and plan["criterion"] == "llmcompressor-reap" and plan["domain"] == "reap_report"


def test_kept_report_uses_decoder_layer_numbers(tmp_path):
    """Qwen3-MoE with dense decoder layers 0 and 2: the report's layers 1 and 3 are MoE layers 0 and 1."""
    model = tmp_path / "qwen"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Qwen3MoeForCausalLM"],
                "model_type": "qwen3_moe",
                "num_hidden_layers": 4,
                "num_experts": 6,
                "num_experts_per_tok": 2,
                "mlp_only_layers": [0, 2],
                "decoder_sparse_step": 1,
            }
        )
    )
    report = _kept_report(tmp_path / "r.json", {1: [0, 2, 5], 3: [1, 3, 4]})
    out = tmp_path / "plan.json"
    run_cli("plan", "--from-llmcompressor", report, "--model", model, "--out", out, check=True)
    assert json.loads(out.read_text())["kept"] == [[0, 2, 5], [1, 3, 4]]


def test_plan_from_saliency_report_keeps_the_most_salient(tmp_path):
    model = _config_dir(tmp_path / "model")
    rng = np.random.default_rng(1)
    saliency = rng.uniform(0, 3, (12, 8))  # distinct values: the kept set is unambiguous
    report = tmp_path / "saliency.json"
    report.write_text(
        json.dumps(
            {
                "saliency": saliency.tolist(),
                "count": rng.integers(0, 99, (12, 8)).tolist(),
                "topk_weights": saliency.tolist(),
            }
        )
    )
    out = tmp_path / "plan.json"
    run_cli("plan", "--from-llmcompressor", report, "--model", model, "--experts", "3", "--out", out, check=True)
    expected = [sorted(int(e) for e in np.argsort(row)[-3:]) for row in saliency]
    assert json.loads(out.read_text())["kept"] == expected


def test_exported_saliencies_read_back_to_the_same_order(tmp_path):
    run = token_routed_run(tmp_path / "run", seed=3, domain_shift=1.0, with_norms=True, num_layers=3, num_experts=8)
    run_cli("analyze", run, "--segment", "all", "--criteria", "reap", "--no-stats", "--no-coactivation", check=True)
    published, llmc = tmp_path / "published", tmp_path / "llmc"
    run_cli("export-rankings", run, "--criterion", "reap", "--out", published, check=True)
    run_cli("export-rankings", run, "--criterion", "reap", "--format", "llmcompressor", "--out", llmc, check=True)
    # independent REAP saliency: mean over routed tokens of weight * norm, from the raw trace rows
    num, den = defaultdict(float), defaultdict(int)
    for part in sorted((run / "traces").glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            for slot, (e, w, n) in enumerate(zip(row["ids"], row["weights"], row["expert_norms"])):
                key = (row["domain"], slot // 2, e)
                num[key] += w * n
                den[key] += 1
    for domain in ("law", "math"):
        report = json.loads((llmc / f"{domain}.json").read_text())
        assert set(report) == {"saliency", "count"}
        for layer in range(3):
            for e in range(8):
                key = (domain, layer, e)
                assert report["count"][layer][e] == den[key]
                assert report["saliency"][layer][e] == pytest.approx(num[key] / den[key] if den[key] else 0.0, rel=1e-5)
        # read back by the llm-compressor reader: same order as moeprint's own ranking
        from moeprint.importers.llmcompressor import read_report

        ranking = json.loads((published / f"{domain}.json").read_text())
        assert read_report(llmc / f"{domain}.json").ranking() == [ranking[f"layer_{i}"] for i in range(3)]


def test_bad_reports_give_one_line(tmp_path, capsys):
    model = _config_dir(tmp_path / "model", num_hidden_layers=2)
    out = tmp_path / "plan.json"

    def fails(doc, message, *extra):
        report = tmp_path / "r.json"
        report.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        args = ("plan", "--from-llmcompressor", report, "--model", model, "--out", out, *extra)
        assert_error_line(*main_in_process(capsys, *args), message)
        assert not out.exists()

    fails("{", "r.json")
    fails({"model.layers.0.mlp": [0, 1], "model.layers.1.mlp": [0, 1, 2]}, "different layers")
    fails({"model.layers.0.mlp": [0, 1]}, "MoE layers")
    fails({"model.layers.0.mlp": [0, 9], "model.layers.1.mlp": [0, 1]}, "outside 0..7")
    fails({"lm_head": [0, 1]}, "names no decoder layer")
    fails({"saliency": [[1.0] * 8, [1.0] * 8]}, "--experts N")
    fails({"saliency": [[1.0] * 8]}, "scores 1 layers", "--experts", "2")
    fails({"saliency": [[1.0] * 8, ["x"] * 8]}, "not a finite number", "--experts", "2")
    fails({"model.layers.0.mlp": [0, 1], "model.layers.1.mlp": [2, 3]}, "disagrees", "--experts", "3")
