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

__all__ = ["record", "record_run", "merge_runs", "parse_shard", "RecordSettings", "Shard"]


def record_run(
    model_dir: str | Path,
    prompts: str | Sequence[str] = "builtin",
    out_dir: str | Path = "runs/recorded",
    settings: RecordSettings = RecordSettings(),
    *,
    domains: Iterable[str] | None = None,
    limit: int | None = None,
    shard: str | None = None,
    device: str = "auto",
    progress: bool = True,
    cluster: ClusterSettings | None = None,
) -> Path:
    """Load prompt source(s) (`builtin`, a .jsonl/.csv file, or BENCHMARK[:path]) and record them.
    With `cluster`, on Ray workers (moeprint.record.distributed). Returns the complete run directory
    (manifest.json written last)."""
    from moeprint.prompts import load_prompts

    check_settings(settings.batch_size, settings.max_new_tokens, shard)  # before loading prompts, models or torch
    LoadSettings(device, settings.dtype)  # the same for --device and --dtype
    if cluster is not None:
        if shard is not None or device != "auto":
            raise MoeprintError(
                "--ray makes its own shards and devices: drop --shard and --device "
                "(workers use their GPUs with --gpus-per-worker, else the CPU)."
            )
        cluster.check()
    records = load_prompts(prompts, domains=domains, limit=limit)
    if cluster is not None:
        from moeprint.record.distributed import record_on_ray

        return record_on_ray(model_dir, records, out_dir, settings, cluster, progress=progress)
    from moeprint.record.runner import record

    return record(model_dir, records, out_dir, settings, shard=shard, device=device, progress=progress)


def record(*args, **kwargs) -> Path:
    """Record a list of PromptRecords (see moeprint.record.runner.record)."""
    from moeprint.record.runner import record as _record

    return _record(*args, **kwargs)


def merge_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    from moeprint.record.merge import merge_runs as _merge

    return _merge(run_dirs, out_dir)
