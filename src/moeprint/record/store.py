"""Writing a recorded run: trace parts, per-batch prompt results, prompts.parquet, manifest.

Layout while recording (a run is complete only once manifest.json exists, written last):
    RUN/traces/part-00007.parquet   routing of batch 7 (global batch index), written atomically
    RUN/.record/state.json          settings of the recording; a resume must match them
    RUN/.record/batch-00007.json    per-prompt results of batch 7, written after its part: the batch is done
A rerun skips every done batch, so a killed run resumes to the same files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_path, atomic_write_json, read_json
from moeprint.io.identity import model_sha256
from moeprint.io.run import PROMPTS_SCHEMA, RunDir, trace_schema
from moeprint.types import PromptRecord

STATE_DIR = ".record"


def part_name(batch_index: int) -> str:
    return f"part-{batch_index:05d}.parquet"


def batch_done_path(run: RunDir, batch_index: int) -> Path:
    return run.root / STATE_DIR / f"batch-{batch_index:05d}.json"


def trace_table(columns: dict[str, Any], with_logits: bool, with_norms: bool) -> pa.Table:
    """A trace table from flat numpy columns; list columns come as (T, width) arrays."""
    schema = trace_schema(with_logits=with_logits, with_norms=with_norms)
    arrays = []
    for field in schema:
        value = columns[field.name]
        if pa.types.is_list(field.type):
            value = np.ascontiguousarray(value)
            rows, width = value.shape
            offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
            flat = pa.array(value.reshape(-1), type=field.type.value_type)
            arrays.append(pa.ListArray.from_arrays(offsets, flat, type=field.type))
        else:
            arrays.append(pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_part(run: RunDir, batch_index: int, table: pa.Table) -> Path:
    path = run.traces_dir / part_name(batch_index)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def write_batch_done(run: RunDir, batch_index: int, prompt_rows: list[dict[str, Any]]) -> None:
    atomic_write_json(batch_done_path(run, batch_index), {"batch": batch_index, "prompts": prompt_rows})


def read_batch_done(run: RunDir, batch_index: int) -> list[dict[str, Any]] | None:
    path = batch_done_path(run, batch_index)
    if not path.exists() or not (run.traces_dir / part_name(batch_index)).exists():
        return None
    return read_json(path)["prompts"]


def write_prompts_table(run: RunDir, rows: list[dict[str, Any]]) -> Path:
    """prompts.parquet, rows sorted by prompt_id (so shard merges and resumes write the same file)."""
    rows = sorted(rows, key=lambda r: r["prompt_id"])
    table = pa.Table.from_pylist(rows, schema=PROMPTS_SCHEMA)
    with atomic_path(run.prompts_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return run.prompts_path


def prompt_row(prompt: PromptRecord) -> dict[str, Any]:
    return {
        "prompt_id": prompt.prompt_id,
        "domain": prompt.domain,
        "source": prompt.source,
        "category": prompt.category,
        "text": prompt.text,
        "messages": json.dumps(list(prompt.messages), ensure_ascii=False) if prompt.messages is not None else None,
    }


def suite_sha256(prompts: Sequence[PromptRecord]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps(prompt_row(p), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """The model's identity: config.json plus the content of every safetensors shard (moeprint.io.identity)."""
    return model_sha256(model_dir)


def check_or_write_state(run: RunDir, state: dict[str, Any]) -> bool:
    """Write the recording settings, or check that an unfinished run was started with the same ones.
    Returns True when resuming."""
    path = run.root / STATE_DIR / "state.json"
    if path.exists():
        previous = read_json(path)
        if previous != state:
            changed = sorted(k for k in set(previous) | set(state) if previous.get(k) != state.get(k))
            raise MoeprintError(
                f"{run.root} holds an unfinished recording with different settings ({', '.join(changed)}); "
                "rerun with the same settings to resume, or choose another --out."
            )
        return True
    atomic_write_json(path, state)
    return False
