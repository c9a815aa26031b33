"""Deterministic rendering: the chat template's date is fixed per run (--date), recorded in the
manifest, and resume and merge refuse prompts that rendered to other text."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from conftest import assert_clean_error, run_cli
from moeprint.errors import MoeprintError
from moeprint.prompts import DEFAULT_DATE, TemplateInputs, load_prompts, render_prompt, rendered_sha256
from test_record_cli import files_of

DATED_TEMPLATE = (
    "<|start|>system<|message|>Current date: {{ strftime_now('%Y-%m-%d') }}<|end|>"
    "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)


@pytest.fixture(scope="module")
def dated_model(tmp_path_factory, tiny_model_dir):
    """The tiny model with a template that, like gpt-oss harmony, reads the date from the clock."""
    out = tmp_path_factory.mktemp("dated") / "model"
    shutil.copytree(tiny_model_dir, out)
    (out / "chat_template.jinja").write_text(DATED_TEMPLATE)
    return out


def test_the_template_date_is_fixed_and_the_clock_restored(dated_model):
    from transformers import AutoTokenizer
    from transformers.utils import chat_template_utils

    tok = AutoTokenizer.from_pretrained(dated_model)
    (p,) = load_prompts("builtin", limit=1)
    assert f"Current date: {DEFAULT_DATE}<|end|>" in render_prompt(tok, p)
    assert "Current date: 2024-02-29<|end|>" in render_prompt(tok, p, template=TemplateInputs("2024-02-29"))
    assert chat_template_utils.datetime is dt.datetime  # the real clock is back after rendering
    today = dt.date.today().isoformat()
    assert f"Current date: {today}" in tok.apply_chat_template([dict(m) for m in p.messages], tokenize=False)
    llama = tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, chat_template="{{ date_string }}", date_string="05 Aug 2025"
    )
    assert llama == "05 Aug 2025"
    for bad in ("2025-13-01", "yesterday", "2025-8-5"):
        with pytest.raises(MoeprintError, match="--date"):
            TemplateInputs(bad)


def test_resume_refuses_another_date_and_same_inputs_are_byte_identical(dated_model, tmp_path):
    args = ["--prompts", "builtin", "--limit", "4", "--batch-size", "2", "--max-new-tokens", "2", "--quiet"]
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli("record", dated_model, *args, "--date", "2025-01-01", "--out", first, check=True)
    run_cli("record", dated_model, *args, "--date", "2025-01-01", "--out", second, check=True)
    assert files_of(first) == files_of(second)
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["template_inputs"] == {"date": "2025-01-01"}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dated_model)
    prompts = load_prompts("builtin", limit=4)
    rendered = [render_prompt(tok, p, template=TemplateInputs("2025-01-01")) for p in prompts]
    assert all("Current date: 2025-01-01" in r for r in rendered)
    assert manifest["rendered_sha256"] == rendered_sha256(rendered)

    unfinished = tmp_path / "unfinished"
    shutil.copytree(first, unfinished)
    (unfinished / "manifest.json").unlink()  # what a kill before the end leaves: parts and state, no manifest
    proc = run_cli("record", dated_model, *args, "--date", "2025-01-02", "--out", unfinished)
    assert_clean_error(proc)
    assert "--date 2025-01-01, now 2025-01-02" in proc.stderr
    assert not (unfinished / "manifest.json").exists()
    run_cli("record", dated_model, *args, "--date", "2025-01-01", "--out", unfinished, check=True)
    assert files_of(unfinished) == files_of(first)


def test_merge_refuses_shards_rendered_on_other_dates(dated_model, tmp_path):
    args = ["--prompts", "builtin", "--limit", "4", "--batch-size", "2", "--max-new-tokens", "2", "--quiet"]
    run_cli(
        "record", dated_model, *args, "--shard", "0/2", "--date", "2025-01-01", "--out", tmp_path / "s0", check=True
    )
    run_cli(
        "record", dated_model, *args, "--shard", "1/2", "--date", "2025-01-02", "--out", tmp_path / "s1", check=True
    )
    proc = run_cli("merge-runs", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "merged")
    assert_clean_error(proc)
    assert "template_inputs" in proc.stderr and "rendered_sha256" in proc.stderr
    assert not (tmp_path / "merged").exists()
