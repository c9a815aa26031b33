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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_json, read_json
from moeprint.io.identity import model_sha256
from moeprint.io.manifest import GenerationSettings, TemplateInputs
from moeprint.io.run import RunDir, trace_part_name, trace_schema
from moeprint.types import PromptRecord

STATE_DIR = ".record"


@dataclass(frozen=True)
class RecordingState:
    """RUN/.record/state.json: the settings an unfinished recording was started with; a resume must match them."""

    model: str  # the model folder, resolved
    model_sha256: str
    prompt_suite_sha256: str
    generation: GenerationSettings
    has_logits: bool
    has_norms: bool
    shard: str | None  # "I/N"
    template_inputs: TemplateInputs
    rendered_sha256: str  # of the prompts as rendered, in order

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "prompt_suite_sha256": self.prompt_suite_sha256,
            "generation": self.generation.to_json(),
            "has_logits": self.has_logits,
            "has_norms": self.has_norms,
            "shard": self.shard,
            "template_inputs": self.template_inputs.to_json(),
            "rendered_sha256": self.rendered_sha256,
        }


def state_path(run: RunDir) -> Path:
    return run.root / STATE_DIR / "state.json"


def read_started_state(run: RunDir) -> dict[str, Any] | None:
    """The state an unfinished recording was started with, as written (any moeprint version), or None."""
    path = state_path(run)
    return read_json(path) if path.exists() else None


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


def write_batch_done(run: RunDir, batch_index: int, prompt_rows: list[dict[str, Any]]) -> None:
    atomic_write_json(batch_done_path(run, batch_index), {"batch": batch_index, "prompts": prompt_rows})


def read_batch_done(run: RunDir, batch_index: int) -> list[dict[str, Any]] | None:
    path = batch_done_path(run, batch_index)
    if not path.exists() or not (run.traces_dir / trace_part_name(batch_index)).exists():
        return None
    return read_json(path)["prompts"]


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


def check_or_write_state(run: RunDir, started: RecordingState) -> bool:
    """Write the recording settings, or check that an unfinished run was started with the same ones.
    Returns True when resuming."""
    state = started.to_json()
    previous = read_started_state(run)
    if previous is not None:
        if previous != state:
            changed = sorted(k for k in set(previous) | set(state) if previous.get(k) != state.get(k))
            raise MoeprintError(
                f"{run.root} holds an unfinished recording with different settings ({', '.join(changed)}); "
                "rerun with the same settings to resume, or choose another --out."
            )
        return True
    atomic_write_json(state_path(run), state)
    return False
