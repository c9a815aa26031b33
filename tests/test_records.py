"""Typed records that cross module boundaries: the run manifest (JSON round trips, old and imported runs),
router captures (hooks -> trace columns), and the one progress module."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO
from moeprint.adapters.gpt_oss import GPT_OSS
from moeprint.errors import MoeprintError
from moeprint.io.manifest import (
    GenerationSettings,
    ImportSource,
    ModelIdentity,
    RecordingInputs,
    TemplateInputs,
)
from moeprint.io.run import RunDir, trace_schema
from moeprint.record import RecordSettings, record
from moeprint.record.hooks import RouterHooks
from moeprint.types import PromptRecord, RouterCapture

# a recorded run's manifest as moeprint has written it since template inputs were added (typed out by hand)
RECORDED = {
    "kind": "recorded",
    "model": "/models/tiny",
    "model_sha256": "ab" * 32,
    "model_weights": {"model.safetensors": "cd" * 32},
    "architecture": "GptOssForCausalLM",
    "num_layers": 2,
    "num_experts": 8,
    "top_k": 2,
    "moe_layers": [0, 1],
    "expert_groups": [2, 1],
    "domains": ["law", "math"],
    "n_prompts": 3,
    "n_tokens": 41,
    "has_logits": False,
    "has_norms": True,
    "has_token_ids": True,
    "prompt_suite_sha256": "ef" * 32,
    "template_inputs": {"date": "2025-01-02"},
    "rendered_sha256": "01" * 32,
    "generation": {
        "max_new_tokens": 4,
        "do_sample": False,
        "seed": 7,
        "batch_size": 2,
        "reasoning_effort": "low",
        "dtype": "bfloat16",
    },
    "shard": "1/3",
    "versions": {"moeprint": "0.1.0", "torch": "2.13.0+cpu"},
    "merged_from": ["runs/a", "runs/b"],
}

# an imported run's manifest (importers/fingerprinting.py): no recording inputs, a source block
IMPORTED = {
    "kind": "imported",
    "model": "openai/gpt-oss-20b",
    "model_sha256": None,
    "architecture": "GptOssForCausalLM",
    "num_layers": 24,
    "num_experts": 32,
    "top_k": 4,
    "domains": ["science"],
    "n_prompts": 5,
    "n_tokens": 900,
    "has_logits": False,
    "has_norms": False,
    "has_token_ids": False,
    "prompt_suite_sha256": "23" * 32,
    "generation": {
        "max_new_tokens": 512,
        "do_sample": False,
        "seed": None,
        "batch_size": None,
        "reasoning_effort": None,
        "dtype": None,
    },
    "versions": {},
    "source": {
        "path": "/data/fp",
        "domains_map": "/data/fp/domains.json",
        "combos": 3,
        "missing_examples": 1,
        "missing_summaries": 0,
        "dropped_rows": 2,
    },
}


def _write(tmp_path: Path, doc) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.manifest_path.write_text(json.dumps(doc))
    return run


def test_recorded_manifest_reads_every_field_and_writes_the_same_json(tmp_path):
    m = _write(tmp_path, RECORDED).manifest()
    assert m.model == ModelIdentity("/models/tiny", "ab" * 32, "GptOssForCausalLM", {"model.safetensors": "cd" * 32})
    assert (m.num_layers, m.num_experts, m.top_k, m.moe_layers, m.expert_groups) == (2, 8, 2, (0, 1), (2, 1))
    assert (m.domains, m.n_prompts, m.n_tokens, m.has_norms, m.has_logits) == (("law", "math"), 3, 41, True, False)
    assert m.recording == RecordingInputs(TemplateInputs("2025-01-02"), "01" * 32, "1/3")
    assert m.generation == GenerationSettings(4, False, 7, 2, "low", "bfloat16")
    assert m.merged_from == ("runs/a", "runs/b") and m.source is None
    out = RunDir(tmp_path / "copy")
    out.root.mkdir()
    out.write_manifest(m)
    assert json.loads(out.manifest_path.read_text()) == RECORDED  # same keys, values and order
    assert list(json.loads(out.manifest_path.read_text())) == list(RECORDED)


def test_imported_manifest_round_trips(tmp_path):
    m = _write(tmp_path, IMPORTED).manifest()
    assert m.recording is None and m.model.sha256 is None and not m.has_token_ids
    assert m.source == ImportSource("/data/fp", "/data/fp/domains.json", 3, 1, 0, 2)
    assert m.to_json() == IMPORTED and list(m.to_json()) == list(IMPORTED)


def test_a_minimal_old_manifest_loads_with_the_defaults_readers_assumed(tmp_path):
    """Runs written before the optional keys existed (and the test fixtures) carry only the shape."""
    doc = {"kind": "recorded", "model": "m", "num_layers": 1, "num_experts": 4, "top_k": 2, "domains": ["law"]}
    m = _write(tmp_path, doc).manifest()
    assert m.has_token_ids and not m.has_norms and not m.has_logits  # what `.get(key, default)` gave
    assert m.n_tokens is None and m.moe_layers is None and m.recording is None
    assert m.generation == GenerationSettings() and dict(m.versions) == {}


@pytest.mark.parametrize(
    "change, needle",
    [({"moe_layers": 3}, "moe_layers"), ({"generation": [1]}, "generation"), ({"top_k": 9}, "exceeds")],
)
def test_damaged_manifest_fields_give_one_clear_error(tmp_path, change, needle):
    with pytest.raises(MoeprintError, match=needle):
        _write(tmp_path, {**RECORDED, **change}).manifest()


def test_manifest_written_by_record_is_what_the_reader_returns(tmp_path, tiny_model_dir):
    prompts = [
        PromptRecord("p0", "law", "test", text="the court held that"),
        PromptRecord("p1", "math", "test", text="2+2"),
    ]
    settings = RecordSettings(max_new_tokens=2, batch_size=2, seed=3, template=TemplateInputs("2025-03-04"))
    path = record(tiny_model_dir, prompts, tmp_path / "run", settings, progress=False)
    on_disk = json.loads((path / "manifest.json").read_text())
    m = RunDir(path).manifest()
    assert m.to_json() == on_disk and list(m.to_json()) == list(on_disk)
    rows = pq.read_table(path / "traces").num_rows
    assert (on_disk["n_tokens"], on_disk["n_prompts"], on_disk["domains"]) == (rows, 2, ["law", "math"])
    assert on_disk["generation"]["seed"] == 3 and on_disk["template_inputs"] == {"date": "2025-03-04"}
    assert on_disk["shard"] is None and on_disk["architecture"] == "GptOssForCausalLM"


def test_manifest_written_by_the_importer_is_what_the_reader_returns(tmp_path, shared_data):
    from moeprint.importers import import_fingerprinting

    returned = import_fingerprinting(
        shared_data, tmp_path / "run", folders={"gpqa_diamond/Organic Chemistry"}, progress=False
    )
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert RunDir(tmp_path / "run").manifest() == returned
    assert returned.to_json() == on_disk and "template_inputs" not in on_disk and "shard" not in on_disk
    assert on_disk["source"]["path"] == str(shared_data.resolve()) and on_disk["kind"] == "imported"


def test_router_captures_carry_the_trace_columns(tiny_model_dir):
    """One forward under the hooks: per layer one RouterCapture whose tensors have the standard shapes, whose
    column names are trace columns, and whose optional parts exist only when asked for."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    E, k = model.config.num_local_experts, model.config.num_experts_per_tok
    with RouterHooks(model, GPT_OSS, logits=True) as hooks, torch.no_grad():
        model(tokens)
    calls = hooks.take()
    assert len(calls) == model.config.num_hidden_layers
    for (capture,) in calls:
        assert isinstance(capture, RouterCapture) and capture.expert_norms is None
        assert capture.ids.shape == capture.weights.shape == (5, k) and capture.logits.shape == (5, E)
        top = torch.topk(capture.logits, k, dim=-1)  # the ids are the top-k of the captured logits
        assert torch.equal(torch.sort(capture.ids.long(), dim=-1).values, torch.sort(top.indices, dim=-1).values)
        assert set(capture.columns()) == {"ids", "weights", "logits"} <= set(trace_schema(with_logits=True).names)
    with RouterHooks(model, GPT_OSS) as hooks, torch.no_grad():
        model(tokens)
    assert all(set(c.columns()) == {"ids", "weights"} for (c,) in hooks.take())


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_progress_module_imports_a_progress_library():
    progress = REPO / "src" / "moeprint" / "progress.py"
    offenders = [
        str(p.relative_to(REPO))
        for tree in ("src", "bench")
        for p in sorted((REPO / tree).rglob("*.py"))
        if p != progress and any(m == "tqdm" or m.startswith(("tqdm.", "rich.progress")) for m in _imported_modules(p))
    ]
    assert offenders == []
    assert "rich.progress" in _imported_modules(progress)  # the check looks at the right kind of import


def test_progress_bars_count_what_they_are_given():
    from moeprint.progress import Progress, track

    assert list(track(range(4), "t", enabled=False)) == [0, 1, 2, 3]
    with Progress(disable=True) as p:
        a = p.task("a", 10)
        a(3, status="x")
        a()
        task = p._display.tasks[0]
        assert (task.completed, task.total, task.fields["status"]) == (4, 10, "x")
        a.update(completed=9, status="y")
        assert (task.completed, task.fields["status"]) == (9, "y")


def test_recording_state_is_written_as_its_json_and_a_resume_names_what_changed(tmp_path):
    from dataclasses import replace

    from moeprint.record.store import RecordingState, check_or_write_state

    state = RecordingState(
        model="/m",
        model_sha256="aa",
        prompt_suite_sha256="bb",
        generation=GenerationSettings(4, False, 0, 2, None, "auto"),
        has_logits=False,
        has_norms=True,
        shard="0/2",
        template_inputs=TemplateInputs("2025-08-05"),
        rendered_sha256="cc",
    )
    by_hand = {
        "model": "/m",
        "model_sha256": "aa",
        "prompt_suite_sha256": "bb",
        "generation": {
            "max_new_tokens": 4,
            "do_sample": False,
            "seed": 0,
            "batch_size": 2,
            "reasoning_effort": None,
            "dtype": "auto",
        },
        "has_logits": False,
        "has_norms": True,
        "shard": "0/2",
        "template_inputs": {"date": "2025-08-05"},
        "rendered_sha256": "cc",
    }
    run = RunDir(tmp_path / "run")
    assert check_or_write_state(run, state) is False  # a new recording: written
    assert json.loads((run.root / ".record" / "state.json").read_text()) == by_hand
    assert check_or_write_state(run, state) is True  # the same settings: a resume
    with pytest.raises(MoeprintError, match=r"different settings \(has_norms, shard\)"):
        check_or_write_state(run, replace(state, has_norms=False, shard="1/2"))
