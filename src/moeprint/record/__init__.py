"""The recording stage: hooks (tensors) -> runner (batching, generation, resume) -> store (Parquet)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moeprint.errors import MoeprintError
from moeprint.io.loader import LoadSettings
from moeprint.record.options import RecordSettings, Shard, check_settings, parse_shard

if TYPE_CHECKING:
    from moeprint.cluster import ClusterSettings

__all__ = ["record", "record_run", "merge_runs", "parse_shard", "Shard"]


def record_run(
    model_dir: str | Path,
    prompts: str | Sequence[str] = "builtin",
    out_dir: str | Path = "runs/recorded",
    *,
    domains: Iterable[str] | None = None,
    limit: int | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    seed: int = 0,
    logits: bool = False,
    expert_norms: bool = False,
    shard: str | None = None,
    reasoning_effort: str | None = None,
    progress: bool = True,
    load: LoadSettings = LoadSettings(),
    date: str | None = None,
    cluster: ClusterSettings | None = None,
) -> Path:
    """Load prompt source(s) (`builtin`, a .jsonl/.csv file, or BENCHMARK[:path]) and record them.
    With `cluster`, on Ray workers (moeprint.record.distributed). Returns the complete run directory
    (manifest.json written last)."""
    from moeprint.prompts import TemplateInputs, load_prompts

    check_settings(batch_size, max_new_tokens, shard)  # before loading prompts, models or torch
    template = TemplateInputs(date) if date is not None else TemplateInputs()
    if cluster is not None:
        if shard is not None or load.device != "auto":
            raise MoeprintError(
                "--ray makes its own shards and devices: drop --shard and --device "
                "(workers use their GPUs with --gpus-per-worker, else the CPU)."
            )
        cluster.check()
    records = load_prompts(prompts, domains=domains, limit=limit)
    if cluster is not None:
        from moeprint.record.distributed import record_on_ray

        settings = RecordSettings(
            max_new_tokens,
            batch_size,
            do_sample,
            seed,
            logits,
            expert_norms,
            reasoning_effort,
            dtype=load.dtype,
            template=template,
        )
        return record_on_ray(model_dir, records, out_dir, settings, cluster, progress=progress)
    from moeprint.record.runner import record

    return record(
        model_dir,
        records,
        out_dir,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        seed=seed,
        logits=logits,
        expert_norms=expert_norms,
        shard=shard,
        reasoning_effort=reasoning_effort,
        progress=progress,
        load=load,
        template=template,
    )


def record(*args, **kwargs) -> Path:
    """Record a list of PromptRecords (see moeprint.record.runner.record)."""
    from moeprint.record.runner import record as _record

    return _record(*args, **kwargs)


def merge_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    from moeprint.record.merge import merge_runs as _merge

    return _merge(run_dirs, out_dir)
