"""RUN/fingerprints/: the only module that writes it and the only one that reads it (docs/formats.md).

    usage.parquet          sums per (domain incl. `all`, segment incl. `all`, layer, expert)
    coactivation.parquet   pair counts per (domain, segment, layer, a < b)
    rankings/<criterion>/<domain>.json   the published `{"layer_0": [ids best first], ...}` format
    stats.json             per-domain tests (written by the pipeline, read back as a plain document)
    manifest.json          written last: criteria, domains, pooled segments, shape, source hash

Every stage that needs fingerprints (select, evaluate's sweep, report) reads them through the functions
here, as `LayerUsage` records; the path of a ranking file is spelled once, in `ranking_path`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moeprint.analyze.aggregate import LayerUsage, UsageSums
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_path, atomic_write_json, json_exists, read_json, read_parquet
from moeprint.io.run import RunDir, open_run
from moeprint.types import ALL

USAGE_FILE, COACTIVATION_FILE, STATS_FILE, MANIFEST_FILE = (
    "usage.parquet",
    "coactivation.parquet",
    "stats.json",
    "manifest.json",
)
RANKINGS_DIR = "rankings"


def ranking_path(fingerprints_dir: Path, criterion: str, domain: str) -> Path:
    """`fingerprints/rankings/<criterion>/<domain>.json`, the one spelling of that path."""
    return Path(fingerprints_dir) / RANKINGS_DIR / criterion / f"{domain}.json"


def ranked_criteria(fingerprints_dir: Path) -> list[str]:
    """The criteria that have a rankings folder, sorted."""
    root = Path(fingerprints_dir) / RANKINGS_DIR
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def ranked_domains(fingerprints_dir: Path, criterion: str) -> list[str]:
    """The domains with a ranking file (`<domain>.json` or `.json.gz`) under one criterion, sorted."""
    folder = Path(fingerprints_dir) / RANKINGS_DIR / criterion
    return sorted({p.name.split(".json")[0] for p in folder.glob("*.json*")}) if folder.is_dir() else []


USAGE_SCHEMA = pa.schema(
    [
        ("domain", pa.string()),
        ("segment", pa.string()),
        ("layer", pa.int16()),
        ("expert", pa.int16()),
        ("tokens", pa.int64()),
        ("weight_sum", pa.float64()),
        ("weight_max", pa.float32()),
        ("norm_sum", pa.float64()),
        ("weight_norm_sum", pa.float64()),
        ("layer_tokens", pa.int64()),
    ]
)
COACTIVATION_SCHEMA = pa.schema(
    [
        ("domain", pa.string()),
        ("segment", pa.string()),
        ("layer", pa.int16()),
        ("expert_a", pa.int16()),
        ("expert_b", pa.int16()),
        ("count", pa.int64()),
    ]
)


def usage_table(sums: UsageSums, domains: list[str]) -> pa.Table:
    """Rows per (domain incl. `all`, segment incl. `all`, layer, expert), every expert listed."""
    L, E = sums.num_layers, sums.num_experts
    cols: dict[str, list] = {f.name: [] for f in USAGE_SCHEMA}
    layer = np.repeat(np.arange(L, dtype=np.int16), E)
    expert = np.tile(np.arange(E, dtype=np.int16), L)
    for domain in [d for d in domains if d != ALL] + [ALL]:  # a recorded `all` label is part of the pool
        for segment in list(sums.segments) + [ALL]:
            u = sums.select(None if domain == ALL else [domain], None if segment == ALL else [segment])
            cols["domain"].append(np.full(L * E, domain, dtype=object))
            cols["segment"].append(np.full(L * E, segment, dtype=object))
            cols["layer"].append(layer)
            cols["expert"].append(expert)
            cols["tokens"].append(u.tokens.reshape(-1))
            cols["weight_sum"].append(u.weight_sum.reshape(-1))
            cols["weight_max"].append(u.weight_max.reshape(-1))
            cols["norm_sum"].append(None if u.norm_sum is None else u.norm_sum.reshape(-1))
            cols["weight_norm_sum"].append(None if u.weight_norm_sum is None else u.weight_norm_sum.reshape(-1))
            cols["layer_tokens"].append(np.full(L * E, u.n_tokens, dtype=np.int64))
    arrays = []
    for f in USAGE_SCHEMA:
        parts = cols[f.name]
        if any(p is None for p in parts):
            arrays.append(pa.nulls(sum(len(x) for x in cols["layer"]), f.type))
        else:
            arrays.append(pa.array(np.concatenate(parts), f.type))
    return pa.Table.from_arrays(arrays, schema=USAGE_SCHEMA)


def coactivation_table(sums: UsageSums, domains: list[str]) -> pa.Table:
    """Non-zero pair counts per (domain incl. `all`, segment incl. `all`, layer, a < b)."""
    cols: dict[str, list] = {f.name: [] for f in COACTIVATION_SCHEMA}
    for domain in [d for d in domains if d != ALL] + [ALL]:
        for segment in list(sums.segments) + [ALL]:
            c = sums.select_coactivation(None if domain == ALL else [domain], None if segment == ALL else [segment])
            if c is None:
                continue
            l, a, b = np.nonzero(np.triu(c, 1))
            cols["domain"].append(np.full(len(l), domain, dtype=object))
            cols["segment"].append(np.full(len(l), segment, dtype=object))
            cols["layer"].append(l)
            cols["expert_a"].append(a)
            cols["expert_b"].append(b)
            cols["count"].append(c[l, a, b])
    if not cols["layer"]:
        return COACTIVATION_SCHEMA.empty_table()
    return pa.Table.from_arrays(
        [pa.array(np.concatenate(cols[f.name]), f.type) for f in COACTIVATION_SCHEMA], schema=COACTIVATION_SCHEMA
    )


def to_published(ranking: list[list[int]]) -> dict[str, list[int]]:
    return {f"layer_{l}": [int(e) for e in r] for l, r in enumerate(ranking)}


def write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_ranking(fingerprints_dir: Path, criterion: str, domain: str, ranking: list[list[int]]) -> Path:
    return atomic_write_json(ranking_path(fingerprints_dir, criterion, domain), to_published(ranking), indent=None)


def write_fingerprints(
    target: Path,
    sums: UsageSums,
    domains: list[str],
    rankings: dict[str, dict[str, list[list[int]]]],
    stats: dict[str, Any],
    manifest: dict[str, Any],
    extras: Iterable[Callable[[Path], Any]] = (),
) -> None:
    """Every file of a fingerprints folder into `target` (an open atomic directory), manifest.json last.

    `rankings` is {criterion: {domain: per-layer ranking}}; `extras` write further files (plots) before
    the manifest. The manifest gains `rankings` ({criterion: [domains]}); `kind` is `fingerprints`."""
    target = Path(target)
    write_parquet(usage_table(sums, domains), target / USAGE_FILE)
    write_parquet(coactivation_table(sums, domains), target / COACTIVATION_FILE)
    for criterion, ranked in rankings.items():
        for domain, ranking in ranked.items():
            write_ranking(target, criterion, domain, ranking)
    atomic_write_json(target / STATS_FILE, stats)
    for write in extras:
        write(target)
    written = {c: sorted(r) for c, r in rankings.items()}
    atomic_write_json(target / MANIFEST_FILE, {"kind": "fingerprints", **manifest, "rankings": written})


def source_hash(run: RunDir) -> str:
    """sha256 of the run manifest the fingerprints were computed from."""
    return hashlib.sha256(run.manifest_path.read_bytes()).hexdigest()


# ---- readers ------------------------------------------------------------------------------------


def has_fingerprints(fingerprints_dir: Path) -> bool:
    """A complete folder: its manifest (written last) and its usage table exist."""
    return has_manifest(fingerprints_dir) and (Path(fingerprints_dir) / USAGE_FILE).exists()


def has_manifest(fingerprints_dir: Path) -> bool:
    """The folder was finished (its manifest is written last), whatever files it holds."""
    return (Path(fingerprints_dir) / MANIFEST_FILE).exists()


def read_manifest(fingerprints_dir: Path) -> dict[str, Any]:
    return read_json(Path(fingerprints_dir) / MANIFEST_FILE)


def read_usage_table(fingerprints_dir: Path, num_layers: int | None = None, num_experts: int | None = None) -> pa.Table:
    """usage.parquet as a table; with a shape, rows outside it are refused (they would index past the arrays)."""
    fingerprints_dir = Path(fingerprints_dir)
    path = fingerprints_dir / USAGE_FILE
    if not has_fingerprints(fingerprints_dir):
        raise MoeprintError(f"{fingerprints_dir} has no complete fingerprints; run `moeprint analyze` first.")
    table = read_parquet(path)
    missing = {"domain", "segment", "layer", "expert", "tokens", "weight_sum", "layer_tokens"} - set(table.column_names)
    if missing:
        raise MoeprintError(f"{path} is not a usage table as in docs/formats.md (no {', '.join(sorted(missing))}).")
    if num_layers is not None and len(table):
        layer, expert = table["layer"].to_numpy(), table["expert"].to_numpy()
        if layer.min() < 0 or expert.min() < 0 or layer.max() >= num_layers or expert.max() >= num_experts:
            raise MoeprintError(f"{path} has a layer or expert outside the run's {num_layers} x {num_experts}.")
    return table


def pooled_usage(table: pa.Table, domain: str, segments: list[str], num_layers: int, num_experts: int) -> LayerUsage:
    """Pool the usage rows of one domain over raw segments into a LayerUsage."""
    mask = pc.and_(pc.equal(table["domain"], domain), pc.is_in(table["segment"], value_set=pa.array(segments)))
    sub = table.filter(mask)
    layer = sub["layer"].to_numpy().astype(np.intp)
    expert = sub["expert"].to_numpy().astype(np.intp)
    flat = layer * num_experts + expert

    def pool(col: str) -> np.ndarray | None:
        if col not in sub.column_names:
            return None
        values = sub[col]
        if values.null_count == len(values) and len(values):
            return None
        return np.bincount(
            flat, weights=values.to_numpy(zero_copy_only=False).astype(np.float64), minlength=num_layers * num_experts
        ).reshape(num_layers, num_experts)

    # layer_tokens repeats on every expert row of a (segment, layer): one value per pair, summed over segments
    per_layer = np.zeros(num_layers, np.int64)
    seg = sub["segment"].to_numpy(zero_copy_only=False)
    counts = sub["layer_tokens"].to_numpy(zero_copy_only=False).astype(np.int64)
    for s in set(seg.tolist()):
        at = seg == s
        seg_layer = np.zeros(num_layers, np.int64)
        np.maximum.at(seg_layer, layer[at], counts[at])
        per_layer += seg_layer
    return LayerUsage(
        pool("tokens").astype(np.int64),
        pool("weight_sum"),
        int(per_layer[0]) if num_layers else 0,
        None,
        pool("norm_sum"),
        pool("weight_norm_sum"),
        per_layer,
    )


def load_fingerprints(run_path: str | Path) -> tuple[dict[str, Any], Callable[[str | None], LayerUsage]]:
    """(fingerprints manifest, usage_of(domain or None=all)) pooled over the analyzed segments."""
    run = open_run(run_path)
    table = read_usage_table(run.fingerprints_dir)
    fmanifest = read_manifest(run.fingerprints_dir)
    segs = fmanifest["segments_pooled"]
    L, E = fmanifest["num_layers"], fmanifest["num_experts"]

    def usage_of(domain: str | None) -> LayerUsage:
        return pooled_usage(table, ALL if domain is None else domain, segs, L, E)

    return fmanifest, usage_of


def read_segment_usage(fingerprints_dir: Path, num_layers: int, num_experts: int) -> dict[str, dict[str, LayerUsage]]:
    """Every (domain, segment) of usage.parquet as {domain: {segment: LayerUsage}}, unpooled."""
    table = read_usage_table(fingerprints_dir, num_layers, num_experts)
    keys = sorted(set(zip(table["domain"].to_pylist(), table["segment"].to_pylist())))
    out: dict[str, dict[str, LayerUsage]] = {}
    for domain, segment in keys:
        out.setdefault(str(domain), {})[str(segment)] = pooled_usage(table, domain, [segment], num_layers, num_experts)
    return out


def read_ranking_file(path: Path) -> list[list[int]]:
    data = read_ranking_document(path)
    try:
        return [list(map(int, data[f"layer_{i}"])) for i in range(len(data))]
    except (KeyError, TypeError, ValueError):
        raise MoeprintError(f"{path} is not a ranking file ({{'layer_0': [ids], ...}}).") from None


def read_ranking_document(path: Path) -> Any:
    """A ranking file as written (the published `{"layer_0": [...], ...}` format); the plan built from it
    checks its shape against the model, with that plan's own messages."""
    return read_json(path)


def read_rankings(fingerprints_dir: Path, domain: str) -> dict[str, list[list[int]]]:
    """{criterion: per-layer ranking} of every criterion that ranked `domain`."""
    out = {}
    for criterion in ranked_criteria(fingerprints_dir):
        path = ranking_path(fingerprints_dir, criterion, domain)
        if json_exists(path):
            out[criterion] = read_ranking_file(path)
    return out


def read_stats(fingerprints_dir: Path) -> dict[str, Any] | None:
    """stats.json as written, or None when the folder has none."""
    path = Path(fingerprints_dir) / STATS_FILE
    return read_json(path) if path.exists() else None
