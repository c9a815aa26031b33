"""The testbed: a small gpt-oss-architecture model trained here on real domain-labelled text.

from moeprint.testbed import testbed_path, testbed_texts
model = AutoModelForCausalLM.from_pretrained(testbed_path())
texts = testbed_texts("test")          # {domain: [document, ...]}
"""

from __future__ import annotations

from pathlib import Path

from moeprint.errors import MoeprintError

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_DIR = PACKAGE_DIR / "model"
DATA_DIR = PACKAGE_DIR / "data"
EVAL_SPLITS = ("calibration", "test")  # committed; the train split is rebuilt with `moeprint testbed corpus`


def testbed_path() -> Path:
    """Folder of the committed testbed model (config, safetensors, tokenizer, training manifest, plots)."""
    if not (MODEL_DIR / "training_manifest.json").exists():
        raise MoeprintError(f"the testbed model is missing from {MODEL_DIR}; run `moeprint testbed train`.")
    return MODEL_DIR


def testbed_data_path() -> Path:
    """Folder of the committed calibration and test texts (`<domain>/<split>.jsonl`, manifest.json)."""
    if not (DATA_DIR / "manifest.json").exists():
        raise MoeprintError(f"the testbed texts are missing from {DATA_DIR}; run `moeprint testbed train`.")
    return DATA_DIR


def testbed_domains() -> list[str]:
    from moeprint.io.atomic import read_json

    return list(read_json(testbed_data_path() / "manifest.json")["domains"])


def testbed_texts(split: str = "test", domains: list[str] | None = None) -> dict[str, list[str]]:
    """{domain: documents} of the committed `calibration` or `test` split."""
    from moeprint.testbed.corpus import read_split

    if split not in EVAL_SPLITS:
        raise MoeprintError(f"split must be one of {', '.join(EVAL_SPLITS)} (the train split is not committed).")
    known = testbed_domains()
    for d in domains or []:
        if d not in known:
            raise MoeprintError(f"unknown testbed domain {d!r}; known: {', '.join(known)}.")
    return {d: read_split(testbed_data_path(), d, split) for d in (domains or known)}
