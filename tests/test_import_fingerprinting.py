"""Importer of the published gpt-oss-20b traces: alignment, segments, reference reproduction, CLI."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest

from conftest import assert_clean_error, run_cli
from moeprint.analyze import AnalyzeSettings, analyze_run
from moeprint.importers import import_fingerprinting, segment_generated_tokens
from synthetic_runs import check_against_loop

# single-sample combos (their summary was computed from exactly the published example), one unfinished
# generation that reached the final channel, and a folder whose example files are absent
FOLDERS = {"gpqa_diamond/Organic Chemistry", "mmlu_dev/college_physics", "mmlu_validation/astronomy"}
PUBLISHED = ["all", "science", "math", "health_or_medicine", "law", "safety", "instruction_following", "unsafety"]


def load_example(shared_data, folder, combo):
    with gzip.open(shared_data / "data" / folder / f"{combo}_examples.json.gz", "rt") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def imported(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "run"
    manifest = import_fingerprinting(shared_data, out, folders=FOLDERS, progress=False)
    return out, manifest


def trace_rows(run):
    return pq.read_table(run / "traces").to_pylist()


def test_import_alignment_by_hand(imported, shared_data):
    run, manifest = imported
    assert manifest.kind == "imported" and manifest.num_layers == 24 and manifest.top_k == 4
    # the data's model, as the adapter that declares this published routing names it
    assert (manifest.model.name, manifest.model.architecture) == ("openai/gpt-oss-20b", "GptOssForCausalLM")
    assert manifest.source.missing_examples >= 1  # mmlu_validation examples are absent on purpose
    rows = [r for r in trace_rows(run) if r["prompt_id"] == "gpqa_diamond/Organic Chemistry/True_False"]
    ex = load_example(shared_data, "gpqa_diamond/Organic Chemistry", "True_False")
    prompt_len = len(ex["full_text"]) - len(ex["generated_only"])
    assert len(rows) == len(ex["router_data"]) == len(ex["generated_only"]) - 1
    by_pos = {r["position"]: r for r in rows}
    for k in (0, 1, 57, len(rows) - 1):
        entry = ex["router_data"][k][f"token_{prompt_len + k}"]
        row = by_pos[prompt_len + k]
        assert row["token"] == ex["generated_only"][k] and row["token_id"] == -1
        assert row["ids"] == [e for l in range(24) for e in entry[f"layer_{l}"]["selected_experts"]]
        assert row["weights"] == pytest.approx([w for l in range(24) for w in entry[f"layer_{l}"]["selected_probs"]])
    assert by_pos[prompt_len]["token"] == "<|channel|>" and by_pos[prompt_len]["segment"] == "think"
    assert by_pos[prompt_len + len(rows) - 1]["segment"] == "answer"


def test_segments_and_alignment_reproduce_single_sample_summaries(imported, shared_data):
    """A summary over one sample was computed from that very example: its counts must equal ours."""
    run, _ = imported
    layout = json.loads((shared_data / "data" / "map.json").read_text())
    rows = trace_rows(run)
    checked = 0
    for folder in sorted(FOLDERS):
        dataset, category = folder.split("/")
        for combo, info in layout[dataset][category].items():
            if info["sample_count"] != 1 or not (shared_data / "data" / folder / f"{combo}_examples.json.gz").exists():
                continue
            with gzip.open(shared_data / "data" / folder / f"{combo}.json.gz", "rt") as f:
                summary = json.load(f)
            mine = [r for r in rows if r["prompt_id"] == f"{folder}/{combo}"]
            finished = combo.startswith("True")
            for seg in ("think", "answer"):
                analytics = summary.get(f"{seg}_expert_analytics")
                if not analytics:
                    continue
                # the reference put every token of an unfinished generation into "think"
                pick = [r for r in mine if r["segment"] == seg] if finished else mine
                for layer in (0, 11, 23):
                    counts = Counter(r["ids"][layer * 4 + j] for r in pick for j in range(4))
                    n = summary[f"num_{seg}_tokens"]
                    expected = {int(e): round(v["count_frequency"] * n) for e, v in analytics[f"layer_{layer}"].items()}
                    assert {e: c for e, c in expected.items() if c} == dict(counts), (folder, combo, seg, layer)
                    checked += 1
    assert checked >= 9


def test_segment_rule_on_harmony_tokens():
    toks = [
        "<|channel|>",
        "analysis",
        "<|message|>",
        "x",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "y",
        "<|return|>",
    ]
    assert segment_generated_tokens(toks) == ["think"] * 4 + ["generated"] + ["answer"] * 6 + ["generated"]
    assert segment_generated_tokens(["a", "b"]) == ["generated", "generated"]


def test_counts_on_real_examples_match_plain_loop(imported, tmp_path):
    run, _ = imported
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    analyze_run(copy, AnalyzeSettings(criteria=("frequency",), with_stats=False), progress=False)
    check_against_loop(copy)


def test_cli_reference_reproduces_published_rankings(imported, shared_data, tmp_path):
    run, _ = imported
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    run_cli("analyze", copy, "--criterion", "reference", "--no-stats", check=True)
    run_cli("export-rankings", copy, "--criterion", "reference", "--out", tmp_path / "ta", check=True)
    for name in PUBLISHED:
        published = json.loads((shared_data / "topical_analytics" / f"{name}.json").read_text())
        assert json.loads((copy / "fingerprints" / "rankings" / "reference" / f"{name}.json").read_text()) == published
        assert json.loads((tmp_path / "ta" / f"{name}.json").read_text()) == published


def test_cli_import_small_source_warns_about_missing(shared_data, tmp_path):
    src = tmp_path / "src"
    folder = "gpqa_diamond/Organic Chemistry"
    shutil.copytree(shared_data / "data" / folder, src / "data" / folder)
    (src / "data" / folder / "False_False_examples.json.gz").unlink()
    layout = json.loads((shared_data / "data" / "map.json").read_text())
    (src / "data" / "map.json").write_text(
        json.dumps({"gpqa_diamond": {"Organic Chemistry": layout["gpqa_diamond"]["Organic Chemistry"]}})
    )
    (src / "domains.json").write_text(json.dumps({"science": [folder]}))
    proc = run_cli("import-fingerprinting", src, "--out", tmp_path / "run", check=True)
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "1 example file" in warnings[0]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (
        manifest["domains"] == ["science"]
        and manifest["n_prompts"] == len(layout["gpqa_diamond"]["Organic Chemistry"]) - 1
    )
    assert_clean_error(run_cli("import-fingerprinting", tmp_path / "nowhere", "--out", tmp_path / "r2"))
    (tmp_path / "bad.json").write_text("{not json")
    proc = run_cli("import-fingerprinting", src, "--out", tmp_path / "r3", "--domains-map", tmp_path / "bad.json")
    assert_clean_error(proc)
    assert not (tmp_path / "r3").exists()
