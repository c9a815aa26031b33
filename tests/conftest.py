"""Shared fixtures: tiny gpt-oss models built from configs (no downloads) and the CLI entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # two cores on CI; tiny models gain nothing from threads

# The weight-digest cache goes to a per-session folder (inherited by CLI subprocesses), never the user's home.
os.environ["MOEPRINT_CACHE_DIR"] = tempfile.mkdtemp(prefix="moeprint-test-cache-")

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (CI's layout), or further up for git worktrees.
SHARED_DATA = next(
    (p / "shared" / "data" / "expert-fingerprinting" for p in REPO.parents if (p / "shared" / "data").is_dir()),
    REPO.parent / "shared" / "data" / "expert-fingerprinting",
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny GptOssForCausalLM: 2 layers, 8 experts, top-2, fp32, with a BPE tokenizer."""
    from moeprint.testbed.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"published gpt-oss-20b traces not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA


def run_cli(*args: str, cwd: str | Path | None = None, check: bool = False, timeout: float = 600, env=None):
    """Run the real `moeprint` entry point in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.setdefault("OMP_NUM_THREADS", "1")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "moeprint", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"moeprint {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_clean_error(proc) -> None:
    """Bad input: non-zero exit, one `error:` line, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith(("error:", "Error:")), proc.stderr
