"""Per-prompt token files: token strings, segments, and the exact routing recorded for each token.

Routing is packed as base64 typed arrays (one file per prompt, loaded when the prompt is opened),
so a 500-token prompt of a 24-layer top-4 model costs ~100 kB instead of ~1 MB of JSON numbers.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from moeprint.io.manifest import RunManifest
from moeprint.report.aggregate import TraceTable
from moeprint.types import SEGMENTS

# Weights are stored as round(w * WEIGHT_SCALE) in uint16 when they fit (gate weights <= 1 for
# softmax routers), else as float32. The page shows 4 decimals either way.
WEIGHT_SCALE = 10000


def token_strings(tr: TraceTable, manifest: RunManifest) -> list[str]:
    """One display string per trace row: the imported `token` column, else the run's tokenizer, else `#id`."""
    if tr.token_text is not None:
        return ["" if t is None else str(t) for t in tr.token_text]
    decode = _tokenizer_decoder(manifest.model.name)
    cache: dict[int, str] = {}
    out = []
    for tid in tr.token_id.tolist():
        if tid not in cache:
            cache[tid] = decode(tid) if (decode and tid >= 0) else f"#{tid}"
        out.append(cache[tid])
    return out


def _tokenizer_decoder(model: str | None):
    if not model:
        return None
    path = Path(model) / "tokenizer.json"
    if not path.exists():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
    except Exception:  # an unreadable tokenizer only costs the token strings, never the site
        return None
    return lambda tid: tok.decode([tid], skip_special_tokens=False)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode("ascii")


def prompt_payload(tr: TraceTable, rows: slice, strings: list[str], info: dict, num_experts: int) -> dict:
    """Everything the token view needs for one prompt; rows are that prompt's trace rows in position order."""
    routed = tr.routed[rows]
    ids = tr.ids[rows][routed]  # (R, L, k)
    weights = tr.weights[rows][routed]  # (R, L, k)
    id_dtype = np.uint8 if num_experts <= 256 else np.uint16
    scaled = weights.size == 0 or (weights.max() < 65535 / WEIGHT_SCALE and weights.min() >= 0)
    seg_codes = "".join(SEGMENTS[s][0] for s in tr.segment[rows])  # p / t / a / g
    payload = {
        **info,
        "tokens": strings[rows],
        "positions": tr.position[rows].tolist(),
        "seg": seg_codes,
        "routed": "".join("1" if r else "0" for r in routed),
        "ids": _b64(ids.astype(id_dtype).ravel()),
        "idBytes": np.dtype(id_dtype).itemsize,
        "weights": _b64(
            np.rint(weights * WEIGHT_SCALE).astype(np.uint16).ravel() if scaled else weights.astype(np.float32).ravel()
        ),
        "weightScale": WEIGHT_SCALE if scaled else 0,
    }
    return payload
