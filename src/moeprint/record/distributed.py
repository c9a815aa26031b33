"""`moeprint record --ray`: the same recording, fanned out over a Ray cluster.

The driver splits the global batch list into the shards of `--shard I/N` (batch b belongs to shard b % N,
N = --workers on the first run) and keeps one shard run per shard on shared storage:
    OUT.ray-shards/shard-000-of-002/   an ordinary unfinished `record --shard 0/2` run
Each unit of work is one batch. Any worker may record any unit: it writes the batch's trace part and
done marker into the batch's shard run, exactly as `record --shard` would. Once every unit is done the
driver writes each shard's prompts table and manifest, merges the shards with `merge-runs`' code into
OUT (byte-identical to an unsharded run) and deletes OUT.ray-shards. A rerun resumes from the done
markers, with the shard count of the first run whatever --workers says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from moeprint.cluster import ClusterSettings, PoolEvent, UnitResult, WorkerHello, connected, node_name, run_units
from moeprint.errors import MoeprintError
from moeprint.io.atomic import make_output_dir
from moeprint.io.loader import load_tokenizer
from moeprint.io.outputs import OutputLock
from moeprint.io.run import RunDir
from moeprint.record import store
from moeprint.record.merge import merge_runs
from moeprint.record.options import RecordSettings, Shard, check_settings
from moeprint.record.runner import (
    Recorder,
    check_inputs,
    check_run_dir,
    finish_run,
    n_batches,
    prepare_prompts,
    recording_state,
)
from moeprint.record.store import RecordingState
from moeprint.types import PromptRecord

STAGING_SUFFIX = ".ray-shards"
_SHARD_NAME = re.compile(r"shard-(\d{3})-of-(\d{3})")


def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + STAGING_SUFFIX)


def shard_dir(staging: Path, shard: Shard) -> Path:
    return staging / f"shard-{shard.index:03d}-of-{shard.count:03d}"


def record_on_ray(
    model_dir: str | Path,
    prompts: Sequence[PromptRecord],
    out_dir: str | Path,
    settings: RecordSettings,
    cluster: ClusterSettings,
    *,
    progress: bool = True,
    observer: Callable[[PoolEvent], None] | None = None,
) -> Path:
    """Record `prompts` on a Ray cluster into the run `out_dir` (see the module doc). Returns its path."""
    check_settings(settings.batch_size, settings.max_new_tokens, None)
    cluster.check()
    prompts, config, _ = check_inputs(model_dir, prompts)
    out = Path(out_dir)
    check_run_dir(out)
    if out.exists():
        raise MoeprintError(
            f"{out} exists; `record --ray` writes it once, complete: choose another --out "
            "(an unfinished recording made without --ray resumes without --ray)."
        )
    staging = staging_dir(out)
    # OUT is written only at the end (merge_runs locks it then); the staging folder is what two drivers would share
    lock = OutputLock(staging).acquire()
    try:
        return _record_staged(model_dir, prompts, out, staging, settings, cluster, config, progress, observer)
    finally:
        lock.release()


def _record_staged(model_dir, prompts, out, staging, settings, cluster, config, progress, observer) -> Path:
    count = _existing_shard_count(staging) or cluster.workers
    runs = [RunDir(shard_dir(staging, Shard(i, count))) for i in range(count)]
    prepared = prepare_prompts(load_tokenizer(model_dir), prompts, settings, config)  # render + context check first
    base_state = recording_state(model_dir, prompts, settings, None, prepared)
    states = [replace(base_state, shard=str(Shard(i, count))) for i in range(count)]
    for run, state in zip(runs, states):
        if run.is_complete():
            _check_finished_shard(run, state)
        else:
            check_run_dir(run.root)
    total = n_batches(len(prompts), settings.batch_size)
    unfinished = [i for i, run in enumerate(runs) if not run.is_complete()]
    if unfinished:
        fresh = not staging.exists()
        try:
            hellos = _run_workers(
                model_dir,
                prompts,
                settings,
                cluster,
                runs,
                states,
                unfinished,
                base_state,
                total,
                staging,
                progress,
                observer,
            )
        except BaseException:
            if fresh and not any(staging.rglob("part-*.parquet")):
                shutil.rmtree(staging, ignore_errors=True)  # nothing recorded yet: leave no trace of this attempt
            raise
        layers = hellos[0].info["layers"]
        for i in unfinished:
            finish_run(runs[i], model_dir, states[i], config, layers, range(i, total, count))
    merge_runs([r.root for r in runs], out, name_sources=False)
    shutil.rmtree(staging)  # only this command's own shard runs; OUT now holds all their data
    return out


def _run_workers(
    model_dir, prompts, settings, cluster, runs, states, unfinished, base_state, total, staging, progress, observer
) -> list[WorkerHello]:
    """Write the unfinished shard runs' state, then record their missing batches on Ray workers."""
    count = len(runs)
    with connected(cluster):  # reachable, with the resources asked for: now the first writes
        for i in unfinished:
            make_output_dir(runs[i].root)
            store.check_or_write_state(runs[i], states[i])
        units = [
            b for b in range(total) if b % count in unfinished and store.read_batch_done(runs[b % count], b) is None
        ]
        first: list[WorkerHello] = []

        def check_hello(worker: int, hello: WorkerHello) -> None:
            _check_worker(worker, hello, base_state.model_sha256, model_dir, total, staging, first)

        args = (
            str(Path(model_dir).resolve()),
            prompts,
            settings,
            cluster.device,
            [str(r.root.resolve()) for r in runs],
        )
        _, hellos = run_units(
            cluster, RecordWorker, args, units, check_hello, label="record", progress=progress, observer=observer
        )
    return hellos


def _existing_shard_count(staging: Path) -> int | None:
    """N of the shard runs a previous `record --ray` left in `staging` (None when there are none)."""
    if not staging.exists():
        return None
    if not staging.is_dir():
        raise MoeprintError(f"{staging} is a file; `record --ray` keeps its shard runs there: move it away.")
    counts = set()
    for child in staging.iterdir():
        m = _SHARD_NAME.fullmatch(child.name)
        if not m or not child.is_dir():
            raise MoeprintError(f"{staging} holds {child.name!r}, which `record --ray` did not write; move it away.")
        counts.add(int(m.group(2)))
    if len(counts) > 1:
        raise MoeprintError(f"{staging} mixes shard runs of {sorted(counts)} shards; move it away.")
    return counts.pop() if counts else None


def _check_finished_shard(run: RunDir, state: RecordingState) -> None:
    m = run.manifest()
    recorded = {
        "model_sha256": (m.model.sha256, state.model_sha256),
        "prompt_suite_sha256": (m.prompt_suite_sha256, state.prompt_suite_sha256),
        "generation": (m.generation, state.generation),
        "has_logits": (m.has_logits, state.has_logits),
        "has_norms": (m.has_norms, state.has_norms),
        "shard": (m.recording.shard if m.recording else None, state.shard),
    }
    differs = [k for k, (finished, started) in recorded.items() if finished != started]
    if differs:
        raise MoeprintError(
            f"{run.root} was recorded with different settings ({', '.join(differs)}); "
            "rerun with the same settings to resume, or choose another --out."
        )


def _check_worker(
    worker: int, hello: WorkerHello, model_sha256: str, model_dir, total: int, staging: Path, first: list[WorkerHello]
) -> None:
    """Every worker must see the driver's model files, the same batches and the shared shard runs."""
    where = f"Ray worker {worker} (node {hello.node})"
    if hello.model_sha256 != model_sha256:
        raise MoeprintError(
            f"{where} sees different model files at {model_dir} (model hash "
            f"{hello.model_sha256[:12]}..., the driver's is {model_sha256[:12]}...); "
            "every node must see the same model."
        )
    if not hello.info["sees_shards"]:
        raise MoeprintError(f"{where} does not see {staging}: --out must be on storage every node shares.")
    reference = first[0].info["plan_sha256"] if first else None
    if hello.info["n_batches"] != total or reference not in (None, hello.info["plan_sha256"]):
        raise MoeprintError(
            f"{where} splits the prompts into different batches than the others (different tokenizer files?)."
        )
    if not first:
        first.append(hello)


class RecordWorker:
    """One Ray actor's state: a loaded model that records any batch into its shard run."""

    def __init__(
        self,
        model_dir: str,
        prompts: Sequence[PromptRecord],
        settings: RecordSettings,
        device: str,
        shard_dirs: Sequence[str],
    ):
        self.recorder = Recorder(model_dir, prompts, settings, device)  # the one place a worker loads a model
        self.recorder.hooks.attach()
        self.runs = [RunDir(Path(d)) for d in shard_dirs]
        self.model_sha256 = store.model_fingerprint(Path(model_dir))

    def hello(self) -> WorkerHello:
        plan = hashlib.sha256(json.dumps(self.recorder.batches).encode()).hexdigest()
        sees = all(store.state_path(r).exists() or r.is_complete() for r in self.runs)
        info = {
            "layers": self.recorder.hooks.layers,
            "n_batches": len(self.recorder.batches),
            "plan_sha256": plan,
            "sees_shards": sees,
        }
        return WorkerHello(node_name(), os.getpid(), self.model_sha256, info)

    def run(self, batch: int) -> UnitResult:
        rows = self.recorder.record_batch(self.runs[batch % len(self.runs)], batch)
        return UnitResult(batch, sum(r["n_prompt_tokens"] + r["n_generated_tokens"] for r in rows))
