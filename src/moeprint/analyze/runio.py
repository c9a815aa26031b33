"""All file I/O of the analyze stage: stream trace parts into accumulators, write and read fingerprints.

Traces are read batch by batch (`moeprint.io.run.iter_trace_batches`); list columns are flattened straight into
numpy, so no token ever becomes a Python object except the token string keys of a batch's dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moeprint.analyze.aggregate import PromptCounts, UsageSums
from moeprint.errors import MoeprintError
from moeprint.io.manifest import RunManifest
from moeprint.io.run import RunDir, iter_trace_batches
from moeprint.progress import bar
from moeprint.types import SEGMENTS  # torch-free: types.py imports torch for annotations only

# `--segment` choices -> raw segment values they pool. "generated" = every generated token.
SEGMENT_SELECTIONS = {
    "prompt": ["prompt"],
    "think": ["think"],
    "answer": ["answer"],
    "generated": ["think", "answer", "generated"],
    "all": list(SEGMENTS),
}


def routing_arrays(batch: pa.RecordBatch, num_layers: int, top_k: int, column: str) -> np.ndarray:
    """A list<...>[L*k] column -> (T, L, k) numpy array (zero-copy where Arrow allows)."""
    values = batch.column(column).flatten().to_numpy(zero_copy_only=False)
    t = batch.num_rows
    if values.size != t * num_layers * top_k:
        raise MoeprintError(
            f"trace column {column!r} has {values.size} values for {t} rows; expected {num_layers}x{top_k} per row."
        )
    if values.dtype.kind == "f" and not np.isfinite(values).all():  # NaN would rank every layer 0..E-1
        raise MoeprintError(f"trace column {column!r} holds NaN or infinite values; the run is damaged.")
    return values.reshape(t, num_layers, top_k)


def _codes(column: pa.Array, lookup: dict[str, int], what: str, grow: bool = False) -> np.ndarray:
    """Strings -> integer codes via the batch's dictionary (a handful of distinct values per batch)."""
    encoded = (
        pc.dictionary_encode(column).combine_chunks()
        if isinstance(column, pa.ChunkedArray)
        else pc.dictionary_encode(column)
    )
    table = []
    for value in encoded.dictionary.to_pylist():
        if value not in lookup:
            if not grow:
                raise MoeprintError(f"trace {what} {value!r} is not listed in the run manifest.")
            lookup[value] = len(lookup)
        table.append(lookup[value])
    return np.asarray(table, dtype=np.intp)[encoded.indices.to_numpy(zero_copy_only=False)]


@dataclass
class ScanResult:
    sums: UsageSums
    prompts: PromptCounts  # per-prompt counts of the selected segments
    token_domain_counts: dict[str, np.ndarray]  # token key -> (D,) occurrences in the selected segments
    n_rows: int


def _token_column(manifest: RunManifest) -> str:
    """Imported runs carry token strings instead of ids."""
    return "token_id" if manifest.has_token_ids else "token"


def _segment_mask(selected_segments: list[str]) -> np.ndarray:
    """(S,) bool over SEGMENTS: the raw segments a `--segment` choice pools."""
    segment_code = {s: i for i, s in enumerate(SEGMENTS)}
    selected = np.zeros(len(SEGMENTS), dtype=bool)
    selected[[segment_code[s] for s in selected_segments]] = True
    return selected


class _SelectedCounts:
    """The selected segments' per-prompt (or per-window) expert counts and per-token domain occurrences,
    grown batch by batch."""

    def __init__(self, manifest: RunManifest, window: int | None):
        self.domains = list(manifest.domains)
        self.token_column = _token_column(manifest)
        self.window = window
        self.prompts = PromptCounts(manifest.num_layers, manifest.num_experts)
        self.prompt_code: dict[str, int] = {}
        self.token_code: dict[Any, int] = {}
        self.token_counts = np.zeros((0, len(self.domains)), np.int64)  # (V, D)

    def _units(self, batch: pa.RecordBatch, keep: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Row of each kept token in `prompts`: its prompt, or its (prompt, window of `window` positions)."""
        p = _codes(batch.column("prompt_id"), self.prompt_code, "prompt", grow=True)[keep]
        prompt_names = list(self.prompt_code)  # insertion order = code
        if self.window:
            pos = batch.column("position").to_numpy(zero_copy_only=False)[keep].astype(np.intp)
            unit = p * 1_000_000 + pos // self.window  # (prompt, window) key
        else:
            unit = p
        uniq, inverse = np.unique(unit, return_inverse=True)
        first_domain = d[keep][np.unique(inverse, return_index=True)[1]]
        if self.window:
            keys = [f"{prompt_names[u // 1_000_000]}#w{u % 1_000_000}" for u in uniq.tolist()]
        else:
            keys = [prompt_names[u] for u in uniq.tolist()]
        return self.prompts.rows_for(keys, [self.domains[i] for i in first_domain])[inverse]

    def _tokens(self, batch: pa.RecordBatch, keep: np.ndarray, d: np.ndarray) -> None:
        if self.token_column == "token":
            tok = _codes(batch.column("token"), self.token_code, "token", grow=True)
        else:
            tok = batch.column("token_id").to_numpy(zero_copy_only=False).astype(np.intp)
            tok = np.where(tok < 0, 0, tok)
        tok = tok[keep]
        n_tok = int(tok.max(initial=-1)) + 1 if self.token_column != "token" else len(self.token_code)
        if n_tok > self.token_counts.shape[0]:
            grow = np.zeros((n_tok - self.token_counts.shape[0], len(self.domains)), np.int64)
            self.token_counts = np.vstack([self.token_counts, grow])
        np.add.at(self.token_counts, (tok, d[keep]), 1)

    def add(self, batch: pa.RecordBatch, keep: np.ndarray, d: np.ndarray, ids: np.ndarray) -> None:
        """keep (T,) bool: rows of the selected segments; d (T,) domain codes; ids (T, L, k)."""
        if keep.any():
            self.prompts.add_batch(self._units(batch, keep, d), ids[keep])
            self._tokens(batch, keep, d)

    def token_domain_counts(self) -> dict[Any, np.ndarray]:
        """token key -> (D,) occurrences, for the tokens that occurred."""
        counts = self.token_counts
        if self.token_column == "token":
            keys = {code: tok for tok, code in self.token_code.items()}
            return {keys[i]: counts[i] for i in np.flatnonzero(counts.sum(1))}
        return {int(i): counts[i] for i in np.flatnonzero(counts.sum(1))}


def scan_run(
    run: RunDir,
    manifest: RunManifest,
    selected_segments: list[str],
    progress: bool = True,
    with_coactivation: bool = True,
    window: int | None = None,
) -> ScanResult:
    """One streaming pass: fingerprint sums for every (domain, segment), per-prompt counts and
    per-token domain occurrences for the selected segments.

    With `window`, the per-prompt counts are per (prompt, window of `window` positions) instead.
    """
    num_layers, top_k = manifest.num_layers, manifest.top_k
    domain_code = {d: i for i, d in enumerate(manifest.domains)}
    segment_code = {s: i for i, s in enumerate(SEGMENTS)}
    has_norms = manifest.has_norms
    columns = ["prompt_id", "domain", "position", "segment", _token_column(manifest), "ids", "weights"]
    if has_norms:
        columns.append("expert_norms")
    sums = UsageSums(
        tuple(manifest.domains),
        tuple(SEGMENTS),
        num_layers,
        manifest.num_experts,
        top_k,
        with_norms=has_norms,
        with_coactivation=with_coactivation,
    )
    selected = _segment_mask(selected_segments)
    counts = _SelectedCounts(manifest, window)
    n_rows = 0

    # `with`: the bar closes before an error propagates, so the error stays the last line on screen
    with bar("analyze (tokens)", manifest.n_tokens, progress) as advance:
        for batch in iter_trace_batches(run, columns):
            n_rows += batch.num_rows
            d = _codes(batch.column("domain"), domain_code, "domain")
            s = _codes(batch.column("segment"), segment_code, "segment")
            ids = routing_arrays(batch, num_layers, top_k, "ids")  # (T, L, k)
            weights = routing_arrays(batch, num_layers, top_k, "weights")
            norms = routing_arrays(batch, num_layers, top_k, "expert_norms") if has_norms else None
            if ids.size and (ids.min() < 0 or ids.max() >= sums.num_experts):
                raise MoeprintError(f"trace expert ids outside 0..{sums.num_experts - 1}; the run manifest disagrees.")
            sums.add_batch(d * len(SEGMENTS) + s, ids, weights, norms)
            counts.add(batch, selected[s], d, ids)
            advance(batch.num_rows)

    return ScanResult(sums, counts.prompts.finish(), counts.token_domain_counts(), n_rows)


def scan_token_strata(
    run: RunDir, manifest: RunManifest, selected_segments: list[str], tokens: list[Any], prompt_ids: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second pass for token-controlled statistics: counts (pairs, L, E) per (prompt, chosen token) pair.

    Returns (pair_prompt (N,), pair_token (N,), counts (N, L, E)), prompts indexed like `prompt_ids`.
    """
    num_layers, top_k, n_experts = manifest.num_layers, manifest.top_k, manifest.num_experts
    token_column = _token_column(manifest)
    segment_code = {s: i for i, s in enumerate(SEGMENTS)}
    selected = _segment_mask(selected_segments)
    prompt_code = {p: i for i, p in enumerate(prompt_ids)}
    wanted = {tok: i for i, tok in enumerate(tokens)}
    wanted_ids = np.array(sorted(t for t in tokens if isinstance(t, int)), dtype=np.int64)
    wanted_rank = np.array([wanted[int(t)] for t in wanted_ids], dtype=np.intp)
    pairs = PromptCounts(num_layers, n_experts)  # rows = (prompt, token) pairs, counted as they stream by
    for batch in iter_trace_batches(run, ["prompt_id", "segment", token_column, "ids"]):
        s = _codes(batch.column("segment"), segment_code, "segment")
        if token_column == "token":
            lookup: dict[Any, int] = {}
            raw = _codes(batch.column("token"), lookup, "token", grow=True)
            rank_of = np.array([wanted.get(v, -1) for v in lookup], dtype=np.intp)
            tok_rank = rank_of[raw] if len(rank_of) else np.zeros(0, np.intp)
        else:
            raw = batch.column("token_id").to_numpy(zero_copy_only=False).astype(np.int64)
            at = np.clip(np.searchsorted(wanted_ids, raw), 0, max(len(wanted_ids) - 1, 0))
            hit = (wanted_ids[at] == raw) if len(wanted_ids) else np.zeros(len(raw), bool)
            tok_rank = np.where(hit, wanted_rank[at] if len(wanted_ids) else 0, -1)
        keep = selected[s] & (tok_rank >= 0)
        if not keep.any():
            continue
        p = _codes(batch.column("prompt_id"), prompt_code, "prompt", grow=True)[keep]
        key = p * len(tokens) + tok_rank[keep]
        uniq, inverse = np.unique(key, return_inverse=True)
        rows = pairs.rows_for([str(k) for k in uniq.tolist()], [""] * len(uniq))
        pairs.add_batch(rows[inverse], routing_arrays(batch, num_layers, top_k, "ids")[keep])
    pairs.finish()
    keys = np.array([int(k) for k in pairs.prompt_ids], dtype=np.intp)
    return keys // len(tokens), keys % len(tokens), pairs.counts


def scan_token_bags(
    run: RunDir, manifest: RunManifest, selected_segments: list[str], window: int | None, vocab_size: int
) -> tuple[list[str], np.ndarray]:
    """Token-mix control for the classifier: counts of the `vocab_size` most frequent tokens per unit
    (prompt, or prompt#w<i> window, named like scan_run's units). Returns (unit ids, counts (N, V))."""
    from scipy.sparse import coo_matrix

    token_column = _token_column(manifest)
    segment_code = {s: i for i, s in enumerate(SEGMENTS)}
    selected = _segment_mask(selected_segments)
    unit_row: dict[str, int] = {}
    token_code: dict[Any, int] = {}
    prompt_code: dict[str, int] = {}
    rows, cols = [], []
    for batch in iter_trace_batches(run, ["prompt_id", "position", "segment", token_column]):
        keep = selected[_codes(batch.column("segment"), segment_code, "segment")]
        if not keep.any():
            continue
        p = _codes(batch.column("prompt_id"), prompt_code, "prompt", grow=True)[keep]
        names = list(prompt_code)
        if window:
            pos = batch.column("position").to_numpy(zero_copy_only=False)[keep].astype(np.intp)
            unit = p * 1_000_000 + pos // window
            uniq, inverse = np.unique(unit, return_inverse=True)
            keys = [f"{names[u // 1_000_000]}#w{u % 1_000_000}" for u in uniq.tolist()]
        else:
            uniq, inverse = np.unique(p, return_inverse=True)
            keys = [names[u] for u in uniq.tolist()]
        for k in keys:
            unit_row.setdefault(k, len(unit_row))
        row_of = np.array([unit_row[k] for k in keys], dtype=np.intp)
        if token_column == "token":
            tok = _codes(batch.column("token"), token_code, "token", grow=True)[keep]
        else:
            tok = batch.column("token_id").to_numpy(zero_copy_only=False).astype(np.intp)[keep]
        rows.append(row_of[inverse])
        cols.append(tok)
    if not rows:
        return [], np.zeros((0, 0))
    r, c = np.concatenate(rows), np.concatenate(cols)
    bag = coo_matrix((np.ones(len(r)), (r, c)), shape=(len(unit_row), int(c.max()) + 1)).tocsc()
    top = np.argsort(-np.asarray(bag.sum(axis=0)).ravel(), kind="stable")[:vocab_size]
    return list(unit_row), bag[:, top].toarray()
