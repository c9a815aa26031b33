"""The run directory: where every stage reads and writes, and the schemas of its tables.

runs/<name>/manifest.json          written last: the run is complete once it exists
runs/<name>/prompts.parquet        one row per prompt (PROMPTS_SCHEMA); written by write_prompts_table and
                                   read by read_prompts_table only
runs/<name>/traces/part-*.parquet  one row per token (trace_schema); this module is their only writer
                                   (write_trace_part) and reader (iter_trace_batches, read_trace_parts)
runs/<name>/fingerprints/          analyze output
runs/<name>/plans/<plan>.json      prune plans
runs/<name>/evals/*.json           retention results
runs/<name>/site/                  static dashboard
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_path, atomic_write_json, read_json, read_parquet
from moeprint.io.manifest import RunManifest

PROMPTS_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("domain", pa.string()),
        ("source", pa.string()),
        ("category", pa.string()),
        ("text", pa.string()),  # raw text prompt, or null for chat prompts
        ("messages", pa.string()),  # JSON list of {role, content}, or null for raw text
        ("rendered", pa.string()),  # exactly the text the model saw before generating
        ("completion", pa.string()),  # decoded generated text
        ("finished", pa.bool_()),  # stopped on EOS (True) or hit the token cap (False)
        ("n_prompt_tokens", pa.int32()),
        ("n_generated_tokens", pa.int32()),
    ]
)


def trace_schema(with_logits: bool = False, with_norms: bool = False, with_token_text: bool = False) -> pa.Schema:
    """One row per token. `ids`/`weights` are flattened layer-major: entry l*k + j is layer l's j-th choice."""
    fields = [
        ("prompt_id", pa.string()),
        ("domain", pa.string()),
        ("position", pa.int32()),  # 0 at the prompt's first real token
        ("token_id", pa.int32()),  # -1 when unknown (imported traces)
        ("is_generated", pa.bool_()),
        ("segment", pa.string()),  # one of moeprint.types.SEGMENTS
        ("ids", pa.list_(pa.int16())),  # [L*k]
        ("weights", pa.list_(pa.float32())),  # [L*k]
    ]
    if with_logits:
        fields.append(("logits", pa.list_(pa.float32())))  # [L*E]
    if with_norms:
        fields.append(("expert_norms", pa.list_(pa.float32())))  # [L*k]
    if with_token_text:
        fields.append(("token", pa.string()))
    return pa.schema(fields)


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def prompts_path(self) -> Path:
        return self.root / "prompts.parquet"

    @property
    def traces_dir(self) -> Path:
        return self.root / "traces"

    @property
    def fingerprints_dir(self) -> Path:
        return self.root / "fingerprints"

    @property
    def plans_dir(self) -> Path:
        return self.root / "plans"

    @property
    def evals_dir(self) -> Path:
        return self.root / "evals"

    @property
    def site_dir(self) -> Path:
        return self.root / "site"

    def trace_parts(self) -> list[Path]:
        return sorted(self.traces_dir.glob("part-*.parquet"))

    def is_complete(self) -> bool:
        return self.manifest_path.exists()

    def manifest(self) -> RunManifest:
        """The run's manifest (the one reader); a clear error if the run is missing, unfinished or damaged."""
        if not self.root.is_dir():
            raise MoeprintError(f"run directory {self.root} does not exist.")
        if not self.manifest_path.exists():
            raise MoeprintError(f"{self.root} is not a complete run (no manifest.json); record or import it first.")
        return RunManifest.from_json(read_json(self.manifest_path), self.manifest_path)

    def write_manifest(self, manifest: RunManifest) -> Path:
        """The one writer of manifest.json (written last: the run is complete once it exists)."""
        return atomic_write_json(self.manifest_path, manifest.to_json())


def open_run(path: str | Path) -> RunDir:
    """A complete run directory (manifest present), or a MoeprintError."""
    run = RunDir(Path(path))
    run.manifest()
    return run


def software_versions() -> dict[str, str]:
    import torch
    import transformers

    import moeprint

    return {
        "moeprint": moeprint.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


# ---- prompts.parquet: the one writer and the one reader ----------------------------------------------------------


def write_prompts_table(run: RunDir, rows: list[dict[str, Any]]) -> Path:
    """prompts.parquet, rows sorted by prompt_id (so shard merges and resumes write the same file)."""
    rows = sorted(rows, key=lambda r: r["prompt_id"])
    table = pa.Table.from_pylist(rows, schema=PROMPTS_SCHEMA)
    with atomic_path(run.prompts_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return run.prompts_path


def read_prompts_table(run: RunDir, columns: list[str] | None = None) -> pa.Table | None:
    """The run's prompts.parquet (None when the run has none), with one clear error for a damaged file."""
    if not run.prompts_path.exists():
        return None
    return read_parquet(run.prompts_path, columns=columns)


# ---- trace parts: the one writer and the one reader --------------------------------------------------------------

TRACE_BATCH_ROWS = 16384  # rows per streamed batch: bounded memory whatever the part size


def trace_part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_trace_part(run: RunDir, index: int, table: pa.Table) -> Path:
    """`traces/part-NNNNN.parquet`, written atomically (a killed writer leaves no half part)."""
    path = run.traces_dir / trace_part_name(index)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def _trace_parts_or_error(run: RunDir) -> list[Path]:
    parts = run.trace_parts()
    if not parts:
        raise MoeprintError(f"{run.root} has no traces/part-*.parquet files; record or import the run first.")
    return parts


def iter_trace_batches(run: RunDir, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The run's trace rows, part by part in file order, as record batches of `columns`."""
    parts = _trace_parts_or_error(run)
    for part in parts:
        try:
            pf = pq.ParquetFile(part)
            missing = [c for c in columns if c not in set(pf.schema_arrow.names)]
            if missing:
                raise MoeprintError(f"{part} lacks trace column(s) {', '.join(missing)}.")
            yield from pf.iter_batches(batch_size=TRACE_BATCH_ROWS, columns=columns)
        except (pa.ArrowInvalid, OSError) as e:
            raise MoeprintError(f"{part} is not a readable Parquet file ({e}).") from None


def read_trace_parts(run: RunDir) -> Iterator[tuple[Path, pa.Table]]:
    """Each trace part whole (every column), in file order: for readers that need a part's rows together."""
    parts = _trace_parts_or_error(run)
    for part in parts:
        try:
            table = pq.read_table(part)
        except (pa.ArrowInvalid, OSError) as e:
            raise MoeprintError(f"{part} is not a readable Parquet file ({e}).") from None
        yield part, table
