"""A model is its weights: two checkpoints with the same config and the same safetensors headers but
one changed value are different models for resume, merge-runs, factory reruns, evaluate and sweep."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from evaluate_helpers import write_jsonl
from prune_helpers import assert_error_line, main_in_process, random_ranking


def _ok(capsys, *args) -> None:
    code, err = main_in_process(capsys, *args)
    assert code == 0, err


RECORD = ("--prompts", "builtin", "--limit", "2", "--batch-size", "1", "--max-new-tokens", "2", "--quiet")


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: 8 + int.from_bytes(data[:8], "little")]


def _perturbed_copy(src: Path, dst: Path) -> Path:
    """`src` with one weight changed by 1e-3: same config.json, same safetensors header, other weights."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            metadata = st.metadata()
            tensors = {k: st.get_tensor(k) for k in st.keys()}
        name = sorted(tensors)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] += 1e-3
        save_file(tensors, f, metadata=metadata)
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("identity")
    a = shutil.copytree(tiny_model_dir, root / "a")
    b = _perturbed_copy(tiny_model_dir, root / "b")
    for f in a.glob("*.safetensors"):  # the old identity (config + headers) could not tell them apart
        assert _header(f) == _header(b / f.name) and f.read_bytes() != (b / f.name).read_bytes()
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()
    return root, a, b


def test_resume_and_merge_refuse_other_weights(models, capsys):
    from moeprint.io.identity import model_sha256

    root, a, b = models
    run = root / "run"
    _ok(capsys, "record", a, *RECORD, "--out", run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model_sha256"] == model_sha256(a) != model_sha256(b)
    assert manifest["model_weights"] == {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in a.glob("*.safetensors")
    }

    # an unfinished run (no manifest yet) whose model's weights then change in place
    moving = shutil.copytree(a, root / "moving")
    unfinished = root / "unfinished"
    _ok(capsys, "record", moving, *RECORD, "--out", unfinished)
    (unfinished / "manifest.json").unlink()
    shutil.copyfile(b / "model.safetensors", moving / "model.safetensors")
    code, err = main_in_process(capsys, "record", moving, *RECORD, "--out", unfinished)
    assert_error_line(code, err, "model_sha256")
    assert not (unfinished / "manifest.json").exists()

    s0, s1 = root / "s0", root / "s1"
    _ok(capsys, "record", a, *RECORD, "--shard", "0/2", "--out", s0)
    _ok(capsys, "record", b, *RECORD, "--shard", "1/2", "--out", s1)
    code, err = main_in_process(capsys, "merge-runs", s0, s1, "--out", root / "merged")
    assert_error_line(code, err, "model_sha256")
    assert not (root / "merged").exists()


def test_factory_evaluate_and_sweep_refuse_other_weights(models, capsys):
    from moeprint.adapters import load_config_dict

    root, a, b = models
    config = load_config_dict(a)
    rankings = root / "rankings"
    rankings.mkdir()
    ranking = random_ranking(config["num_hidden_layers"], config["num_local_experts"])
    (rankings / "law.json").write_text(json.dumps(ranking))
    out = root / "factory"
    _ok(capsys, "factory", a, "--rankings-dir", rankings, "--sizes", "4", "--out", out, "--no-card")
    (checkpoint,) = [p for p in out.iterdir() if p.is_dir()]
    _ok(capsys, "factory", a, "--rankings-dir", rankings, "--sizes", "4", "--out", out, "--no-card")
    assert [row["status"] for row in json.loads((out / "summary.json").read_text())] == ["skipped (complete)"]
    code, err = main_in_process(
        capsys, "factory", b, "--rankings-dir", rankings, "--sizes", "4", "--out", out, "--no-card"
    )
    assert_error_line(code, err, "not pruned from these weights")

    texts = write_jsonl(root / "texts.jsonl", [{"text": "the court held that the contract was void", "domain": "law"}])
    code, err = main_in_process(
        capsys,
        "evaluate",
        b,
        "--checkpoint",
        checkpoint,
        "--texts",
        texts,
        "--no-speculative",
        "--out",
        root / "e.json",
    )
    assert_error_line(code, err, "other weights")
    assert not (root / "e.json").exists()

    run = root / "run_for_sweep"
    _ok(capsys, "record", a, *RECORD, "--out", run)
    sweep = ("--texts", texts, "--domains", "all", "--sizes", "4", "--criteria", "", "--random-seeds", "1")
    code, err = main_in_process(capsys, "sweep", run, "--model", b, *sweep, "--out", root / "sweep")
    assert_error_line(code, err, "other weights")
    assert not (root / "sweep").exists()


def test_digest_cache_lives_in_moeprint_cache_dir(tiny_model_dir, tmp_path, monkeypatch):
    from moeprint.io.identity import shard_digests

    monkeypatch.setenv("MOEPRINT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    digests = shard_digests(tiny_model_dir)
    shards = sorted(tiny_model_dir.glob("*.safetensors"))
    assert sorted(digests) == [p.name for p in shards]
    for p in shards:
        assert digests[p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    cached = json.loads((tmp_path / "cache" / "weights-sha256.json").read_text())
    assert sorted(cached.values()) == sorted(digests.values())
    assert not (tmp_path / "xdg").exists()
