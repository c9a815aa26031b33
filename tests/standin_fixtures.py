"""The o200k_harmony tokenizer and gpt-oss-20b stand-ins, built once per session from the js-tiktoken ranks
that `.ci/run` installs into .deps/npm (skipped with a reason when they are absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JS_TIKTOKEN_RANKS = (
    Path(os.environ.get("MOEPRINT_JS_TIKTOKEN", REPO / ".deps/npm/node_modules/js-tiktoken"))
    / "dist/ranks/o200k_base.js"
)


@pytest.fixture(scope="session")
def tiktoken_dir(tmp_path_factory) -> Path:
    """A folder holding o200k_base.tiktoken (what TIKTOKEN_ENCODINGS_BASE names for tiktoken/openai-harmony)."""
    if not JS_TIKTOKEN_RANKS.exists():
        pytest.skip(
            f"js-tiktoken ranks not found at {JS_TIKTOKEN_RANKS} (.ci/run installs them: npm install --prefix .deps/npm js-tiktoken)"
        )
    from moeprint.testbed.standin import o200k_ranks_from_js_tiktoken

    d = tmp_path_factory.mktemp("tiktoken")
    (d / "o200k_base.tiktoken").write_bytes(o200k_ranks_from_js_tiktoken(JS_TIKTOKEN_RANKS))
    return d


@pytest.fixture(scope="session")
def harmony_tokenizer_dir(tmp_path_factory, tiktoken_dir) -> Path:
    from moeprint.testbed.standin import write_harmony_tokenizer

    d = tmp_path_factory.mktemp("harmony-tokenizer")
    write_harmony_tokenizer(d, tiktoken_dir / "o200k_base.tiktoken")
    return d


@pytest.fixture(scope="session")
def harmony_encoding(tiktoken_dir):
    harmony = pytest.importorskip("openai_harmony", reason="pip install 'moeprint[test]' (openai-harmony)")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(tiktoken_dir)  # offline: read the ranks built above
    return harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="session")
def standin_1layer(tmp_path_factory, harmony_tokenizer_dir) -> Path:
    """A 1-layer gpt-oss-20b stand-in (2.8 GB on disk, about 4 GB loaded in bf16)."""
    from moeprint.testbed.standin import build_standin

    return build_standin(tmp_path_factory.mktemp("standin") / "gpt-oss-20b-1l", 1, harmony_tokenizer_dir)
