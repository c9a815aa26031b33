"""`moeprint record` / `merge-runs` through the real entry point: bad input, kill + resume, shards."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import REPO, assert_clean_error, run_cli
from moeprint.errors import MoeprintError
from moeprint.prompts import load_prompts
from moeprint.record import RecordSettings, merge_runs, record


def files_of(run):
    """Relative path -> bytes of every trace part and the prompts table."""
    out = {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "traces").glob("part-*.parquet"))}
    out["prompts.parquet"] = (run / "prompts.parquet").read_bytes()
    return out


@pytest.fixture(scope="module")
def dense_model_dir(tmp_path_factory, tiny_model_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("dense") / "llama"
    config = LlamaConfig(
        vocab_size=600,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_bad_input_gives_one_line_and_no_run(tmp_path, tiny_model_dir, dense_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "domain": "law"}\n{"text": \n')
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"text": "a", "domain": "astrology"}\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = {
        "missing model": ([tmp_path / "nope", "--prompts", "builtin"], "does not exist"),
        "dense model": ([dense_model_dir, "--prompts", "builtin"], "not a supported Mixture-of-Experts"),
        "empty prompts": ([tiny_model_dir, "--prompts", empty], "no prompts"),
        "malformed prompts": ([tiny_model_dir, "--prompts", broken], "not valid JSON"),
        "unknown domain": ([tiny_model_dir, "--prompts", unknown], "'astrology' is unknown"),
        "unknown --domains": ([tiny_model_dir, "--prompts", "builtin", "--domains", "law,lw"], "'lw' is unknown"),
        "batch size 0": (
            [tiny_model_dir, "--prompts", "builtin", "--batch-size", "0"],
            "--batch-size must be at least 1",
        ),
        "bad shard": ([tiny_model_dir, "--prompts", "builtin", "--shard", "2/2"], "0 <= I < N"),
    }
    for name, (args, message) in cases.items():
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        proc = run_cli("record", *args, "--out", out, "--max-new-tokens", "2")
        assert_clean_error(proc)
        assert message in proc.stderr, (name, proc.stderr)
        assert not out.exists(), name  # nothing written at all
    out = blocker / "run"  # a path below a regular file cannot be created
    proc = run_cli("record", tiny_model_dir, "--prompts", "builtin", "--out", out, "--max-new-tokens", "2")
    assert_clean_error(proc)
    assert "not a writable directory" in proc.stderr and not out.exists()


@pytest.mark.slow  # two subprocesses that import transformers
def test_killed_recording_resumes_to_the_same_files(tmp_path, tiny_model_dir):
    args = ["--prompts", "builtin", "--limit", "12", "--batch-size", "3", "--max-new-tokens", "5", "--quiet"]
    reference = tmp_path / "reference"
    record(
        tiny_model_dir,
        load_prompts("builtin", limit=12),
        reference,
        RecordSettings(max_new_tokens=5, batch_size=3),
        progress=False,
    )

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", MOEPRINT_RECORD_BATCH_DELAY="30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moeprint", "record", str(tiny_model_dir), *args, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not list((killed / "traces").glob("part-*.parquet")) and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "recording ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    parts = list((killed / "traces").glob("part-*.parquet"))
    assert len(parts) == 1 and not (killed / "manifest.json").exists()  # unfinished: looks unfinished

    proc = run_cli("record", tiny_model_dir, *args, "--out", killed)
    assert proc.returncode == 0, proc.stderr
    assert files_of(killed) == files_of(reference)
    assert (
        json.loads((killed / "manifest.json").read_text())["n_tokens"]
        == json.loads((reference / "manifest.json").read_text())["n_tokens"]
    )
    # a complete run is never overwritten
    with pytest.raises(MoeprintError, match="already a complete run"):
        record(
            tiny_model_dir, load_prompts("builtin", limit=12), killed, RecordSettings(max_new_tokens=5, batch_size=3)
        )


def test_unfinished_run_resumes_only_with_the_same_settings(tmp_path, tiny_model_dir):
    prompts = load_prompts("builtin", limit=2)
    run = tmp_path / "run"
    (run / ".record").mkdir(parents=True)
    (run / ".record" / "state.json").write_text(json.dumps({"generation": {"max_new_tokens": 99}}))
    with pytest.raises(MoeprintError, match="different settings"):
        record(tiny_model_dir, prompts, run, RecordSettings(max_new_tokens=2), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(MoeprintError, match="not an unfinished recording"):
        record(tiny_model_dir, prompts, other, RecordSettings(max_new_tokens=2), progress=False)


def test_shards_merge_into_the_unsharded_run(tmp_path, tiny_model_dir):
    prompts = load_prompts("builtin", limit=10)
    whole = record(
        tiny_model_dir,
        prompts,
        tmp_path / "whole",
        RecordSettings(max_new_tokens=4, batch_size=2, expert_norms=True),
        progress=False,
    )
    shards = [
        record(
            tiny_model_dir,
            prompts,
            tmp_path / f"s{i}",
            RecordSettings(max_new_tokens=4, batch_size=2, expert_norms=True),
            shard=f"{i}/3",
            progress=False,
        )
        for i in range(3)
    ]
    shard_ids = [set(pq.read_table(s / "prompts.parquet")["prompt_id"].to_pylist()) for s in shards]
    assert sum(map(len, shard_ids)) == 10 and not (shard_ids[0] & shard_ids[1])  # disjoint, complete
    proc = run_cli("merge-runs", *shards, "--out", tmp_path / "merged")
    assert proc.returncode == 0, proc.stderr
    merged = tmp_path / "merged"
    assert files_of(merged) == files_of(whole)
    m, w = (json.loads((p / "manifest.json").read_text()) for p in (merged, whole))
    assert (m["n_prompts"], m["n_tokens"], m["domains"]) == (w["n_prompts"], w["n_tokens"], w["domains"])
    with pytest.raises(Exception, match="cover 0..N-1"):
        merge_runs(shards[:2], tmp_path / "incomplete")
    assert not (tmp_path / "incomplete").exists()
