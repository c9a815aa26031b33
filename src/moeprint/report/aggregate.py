"""Counts the site needs from a run's traces (its fingerprints are read by moeprint.analyze.fingerprints).

Everything here is sums and counts over tokens, so the numbers the pages show can be checked
against a plain loop over the traces parquet. Arrays are indexed [layer, expert].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moeprint.analyze.aggregate import LayerUsage
from moeprint.errors import MoeprintError
from moeprint.io.run import RunDir, read_trace_parts
from moeprint.types import ALL, SEGMENTS

__all__ = ["ALL", "TraceTable", "per_prompt_counts", "pool", "read_traces"]


@dataclass
class TraceTable:
    """A run's traces sorted by (prompt, position), with routing as dense arrays."""

    prompt_ids: list[str]  # unique prompt ids, in order
    row_prompt: np.ndarray  # (T,) int: index into prompt_ids
    position: np.ndarray  # (T,) int32
    segment: np.ndarray  # (T,) int8: index into SEGMENTS
    routed: np.ndarray  # (T,) bool: the row carries routing (imported prompt rows may not)
    ids: np.ndarray  # (T, L, k) int16 (junk where not routed)
    weights: np.ndarray  # (T, L, k) float32
    token_text: list[str] | None  # imported runs: the token strings
    token_id: np.ndarray  # (T,) int32 (-1 when unknown)
    domain_of_prompt: dict[str, str]
    router_entropy: np.ndarray | None = None  # (T, L) bits of softmax(logits), when the run recorded logits


def _router_entropy_bits(table: pa.Table, num_layers: int) -> np.ndarray | None:
    """Per row and layer, entropy (bits) of the router's full softmax; NaN for rows without logits."""
    if "logits" not in table.column_names:
        return None
    col = table.column("logits").combine_chunks()
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    out = np.full((table.num_rows, num_layers), np.nan, dtype=np.float32)
    full = lengths > 0
    if full.any():
        width = int(lengths[full][0])
        if (lengths[full] != width).any() or width % num_layers:
            raise MoeprintError("logits rows have inconsistent lengths (expected num_layers x num_experts).")
        z = (
            pc.list_flatten(col)
            .to_numpy(zero_copy_only=False)
            .astype(np.float64)
            .reshape(-1, num_layers, width // num_layers)
        )
        z = z - z.max(axis=-1, keepdims=True)  # (R, L, E)
        p = np.exp(z)
        p /= p.sum(axis=-1, keepdims=True)
        out[full] = -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=-1)
    return out


def read_traces(run: RunDir, num_layers: int, top_k: int) -> TraceTable:
    """Every trace row of `run`, sorted by (prompt, position), with its routing as dense arrays."""
    table = _sorted_trace_table(run, num_layers)
    T = table.num_rows
    routed, ids, weights = _routing(table, run, num_layers, top_k)
    prompt_ids, row_prompt = np.unique(table.column("prompt_id").to_numpy(zero_copy_only=False), return_inverse=True)
    domain_of_prompt = {}
    for i, d in zip(row_prompt.tolist(), table.column("domain").to_pylist()):
        domain_of_prompt.setdefault(str(prompt_ids[i]), d)
    token_id = (
        table.column("token_id").to_numpy(zero_copy_only=False).astype(np.int32)
        if "token_id" in table.column_names
        else np.full(T, -1, np.int32)
    )
    return TraceTable(
        prompt_ids=[str(p) for p in prompt_ids],
        row_prompt=row_prompt.astype(np.int64),
        position=table.column("position").to_numpy(zero_copy_only=False).astype(np.int32),
        segment=_segment_codes(table, run),
        routed=routed,
        ids=ids,
        weights=weights,
        token_text=table.column("token").to_pylist() if "token" in table.column_names else None,
        token_id=token_id,
        domain_of_prompt=domain_of_prompt,
        router_entropy=(
            pc.list_flatten(table.column("router_entropy").combine_chunks())
            .to_numpy(zero_copy_only=False)
            .reshape(T, num_layers)
            if "router_entropy" in table.column_names
            else None
        ),
    )


def _sorted_trace_table(run: RunDir, num_layers: int) -> pa.Table:
    """All trace parts in one table sorted by (prompt, position); logits already reduced to `router_entropy`."""
    tables = []
    for _, t in read_trace_parts(run):
        # logits are L*E floats per token: reduce them to an entropy per layer part by part, then drop them
        entropy = _router_entropy_bits(t, num_layers)
        if entropy is not None:
            t = t.drop_columns(["logits"]).append_column(
                "router_entropy", pa.FixedSizeListArray.from_arrays(pa.array(entropy.ravel()), num_layers)
            )
        tables.append(t)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as e:
        raise MoeprintError(f"trace parts of {run.root} have different schemas ({e}).") from None
    needed = {"prompt_id", "domain", "position", "segment", "ids", "weights"}
    missing = needed - set(table.column_names)
    if missing:
        raise MoeprintError(f"traces of {run.root} lack columns {sorted(missing)}; see docs/formats.md.")
    return table.take(pc.sort_indices(table, [("prompt_id", "ascending"), ("position", "ascending")]))


def _routing(table: pa.Table, run: RunDir, num_layers: int, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(routed (T,) bool, ids (T, L, k) int16, weights (T, L, k) float32); rows without routing hold zeros."""
    width = num_layers * top_k
    ids_col = table.column("ids").combine_chunks()
    w_col = table.column("weights").combine_chunks()
    lengths = pc.list_value_length(ids_col).fill_null(0).to_numpy(zero_copy_only=False)
    bad = (lengths != 0) & (lengths != width)
    if bad.any():
        raise MoeprintError(
            f"a trace row of {run.root} has {int(lengths[bad][0])} routing entries; expected {width} "
            f"(num_layers {num_layers} x top_k {top_k}) or none."
        )
    routed = lengths == width
    T = table.num_rows
    ids = np.zeros((T, width), dtype=np.int16)
    weights = np.zeros((T, width), dtype=np.float32)
    if routed.any():
        ids[routed] = pc.list_flatten(ids_col).to_numpy(zero_copy_only=False).astype(np.int16).reshape(-1, width)
        weights[routed] = pc.list_flatten(w_col).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    return routed, ids.reshape(T, num_layers, top_k), weights.reshape(T, num_layers, top_k)


def _segment_codes(table: pa.Table, run: RunDir) -> np.ndarray:
    """(T,) int8 index into SEGMENTS of every row; one clear error for a segment name outside SEGMENTS."""
    seg_index = {s: i for i, s in enumerate(SEGMENTS)}
    try:
        return np.array([seg_index[s] for s in table.column("segment").to_pylist()], dtype=np.int8)
    except KeyError as e:
        raise MoeprintError(f"unknown segment {e} in traces of {run.root}; expected one of {SEGMENTS}.") from None


def per_prompt_counts(tr: TraceTable, num_experts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt and segment: tokens per expert (P, S, L, E), gate mass (P, S, L, E), routed tokens (P, S)."""
    P, S = len(tr.prompt_ids), len(SEGMENTS)
    T, L, k = tr.ids.shape
    r = tr.routed
    cell = (tr.row_prompt[r] * S + tr.segment[r])[:, None, None]  # (R, 1, 1)
    flat = ((cell * L + np.arange(L)[None, :, None]) * num_experts + tr.ids[r]).ravel()  # (R*L*k,)
    size = P * S * L * num_experts
    if tr.ids[r].size and (tr.ids[r].min() < 0 or tr.ids[r].max() >= num_experts):
        raise MoeprintError(f"traces hold expert ids outside 0..{num_experts - 1}.")
    counts = np.bincount(flat, minlength=size).reshape(P, S, L, num_experts)
    mass = np.bincount(flat, weights=tr.weights[r].ravel().astype(np.float64), minlength=size)
    routed_tokens = np.bincount(tr.row_prompt[r] * S + tr.segment[r], minlength=P * S).reshape(P, S)
    return counts.astype(np.int64), mass.reshape(P, S, L, num_experts), routed_tokens.astype(np.int64)


def pool(counts, mass, routed_tokens, prompt_mask: np.ndarray) -> dict[str, LayerUsage]:
    """Sum the per-prompt arrays over the prompts in `prompt_mask`, per segment and for `all` segments."""
    c = counts[prompt_mask].sum(axis=0)  # (S, L, E)
    m = mass[prompt_mask].sum(axis=0)
    n = routed_tokens[prompt_mask].sum(axis=0)  # (S,)
    out = {}
    for s, name in enumerate(SEGMENTS):
        if n[s] > 0:
            out[name] = LayerUsage(c[s], m[s], int(n[s]))
    out[ALL] = LayerUsage(c.sum(axis=0), m.sum(axis=0), int(n.sum()))
    return out
