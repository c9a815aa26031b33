"""Merge the runs of `moeprint record --shard I/N` (one per machine or GPU) into one run.

Shards split the global batch list (batch b belongs to shard b % N), so their part files have
disjoint names and the merged run holds exactly the parts, prompts and token counts an unsharded
run with the same settings writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory
from moeprint.io.manifest import RecordingInputs, RunManifest
from moeprint.io.run import RunDir, open_run, read_prompts_table, write_prompts_table


def _recording_identity(m: RunManifest) -> dict[str, Any]:
    """The manifest fields that must agree between shards of one recording, by their manifest key."""
    rec = m.recording or RecordingInputs()
    return {
        "kind": m.kind,
        "model_sha256": m.model.sha256,
        "architecture": m.model.architecture,
        "num_layers": m.num_layers,
        "num_experts": m.num_experts,
        "top_k": m.top_k,
        "has_logits": m.has_logits,
        "has_norms": m.has_norms,
        "prompt_suite_sha256": m.prompt_suite_sha256,
        "generation": m.generation,
        "template_inputs": rec.template,
        "rendered_sha256": rec.rendered_sha256,
    }


def merge_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, name_sources: bool = True) -> Path:
    """`name_sources=False` leaves `merged_from` out (the Ray driver deletes its staging shards after the
    merge), so the manifest equals an unsharded run's."""
    if len(run_dirs) < 1:
        raise MoeprintError("give the shard runs to merge.")
    runs = [open_run(p) for p in run_dirs]
    manifests = [r.manifest() for r in runs]
    first = manifests[0]
    same = _recording_identity(first)
    for run, m in zip(runs, manifests):
        differs = [k for k, value in _recording_identity(m).items() if value != same[k]]
        if differs:
            raise MoeprintError(
                f"{run.root} is not a shard of the same recording as {runs[0].root} (differs in {', '.join(differs)})."
            )
    shards = [m.recording.shard if m.recording else None for m in manifests]
    if any(s is None for s in shards):
        raise MoeprintError("only runs recorded with --shard I/N can be merged.")
    counts = {int(s.split("/")[1]) for s in shards}
    indices = sorted(int(s.split("/")[0]) for s in shards)
    if len(counts) != 1 or indices != list(range(counts.pop())):
        raise MoeprintError(f"shards {', '.join(sorted(shards))} do not cover 0..N-1 exactly once.")

    with atomic_directory(out_dir, kind="recorded") as tmp:
        merged = RunDir(tmp)
        merged.traces_dir.mkdir()
        for run in runs:
            for part in run.trace_parts():
                shutil.copyfile(part, merged.traces_dir / part.name)
        tables = [read_prompts_table(run) for run in runs]
        write_prompts_table(merged, pa.concat_tables([t for t in tables if t is not None]).to_pylist())
        manifest = replace(
            first,
            domains=tuple(sorted({d for m in manifests for d in m.domains})),
            n_prompts=sum(m.n_prompts or 0 for m in manifests),
            n_tokens=sum(m.n_tokens or 0 for m in manifests),
            recording=replace(first.recording, shard=None),
            merged_from=tuple(str(r.root) for r in runs) if name_sources else first.merged_from,
        )
        merged.write_manifest(manifest)
    return Path(out_dir)
