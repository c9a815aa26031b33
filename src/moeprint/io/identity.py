"""A model's identity is the content of its weights: the sha256 of every safetensors shard.

Hashing a 13 GB checkpoint takes seconds, so each shard's digest is cached by (real path, size,
mtime_ns) in `$MOEPRINT_CACHE_DIR/weights-sha256.json` if set, else `$XDG_CACHE_HOME/moeprint/`
(default ~/.cache; the tests set MOEPRINT_CACHE_DIR to a temporary folder): a rewritten shard
changes its mtime and is hashed again. `model_sha256` combines config.json with the shard digests;
runs, checkpoints and evaluations record it, and resume, merge-runs, factory reruns, evaluate and
sweep compare it (see docs/formats.md, "Model identity").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from moeprint.errors import MoeprintError

_CHUNK = 16 * 2**20


def _cache_path() -> Path:
    if os.environ.get("MOEPRINT_CACHE_DIR"):  # tests and sandboxes keep the digests out of the user's home
        return Path(os.environ["MOEPRINT_CACHE_DIR"]) / "weights-sha256.json"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moeprint" / "weights-sha256.json"


def _load_cache(path: Path) -> dict[str, str]:
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _save_cache(path: Path, cache: dict[str, str]) -> None:
    from moeprint.io.atomic import atomic_write_json

    try:
        atomic_write_json(path, cache, indent=None)
    except (OSError, MoeprintError):
        pass  # an unwritable cache only costs a rehash next time


def shard_digests(model_dir: str | os.PathLike) -> dict[str, str]:
    """{shard file name: sha256 of its bytes} for every *.safetensors file of `model_dir`."""
    model_dir = Path(model_dir)
    cache_path = _cache_path()
    cache = _load_cache(cache_path)
    digests, changed = {}, False
    for f in sorted(model_dir.glob("*.safetensors")):
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = cache.get(key)
        if not isinstance(digest, str):
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            digest = cache[key] = h.hexdigest()
            changed = True
        digests[f.name] = digest
    if changed:
        _save_cache(cache_path, cache)
    return digests


def model_sha256(model_dir: str | os.PathLike) -> str:
    """sha256 over config.json and every shard's name and content digest: equal iff the same model."""
    model_dir = Path(model_dir)
    try:
        h = hashlib.sha256((model_dir / "config.json").read_bytes())
    except OSError as e:
        raise MoeprintError(f"cannot read {model_dir / 'config.json'} ({e.strerror}).") from None
    for name, digest in shard_digests(model_dir).items():
        h.update(f"\n{name} {digest}".encode())
    return h.hexdigest()


def check_same_model(recorded: str | None, model_dir: str | os.PathLike, what: str) -> None:
    """Refuse `model_dir` when `what` records another model's identity (None: nothing recorded, no check)."""
    if recorded is None:
        return
    if model_sha256(model_dir) != recorded:
        raise MoeprintError(
            f"{what} was made from other weights than {model_dir} (model_sha256 differs); "
            "use the model it was made from."
        )
