"""`moeprint sweep --ray`: the cuts of a sweep spread over Ray workers, each holding the base once.

A unit is one cut (plan index). Each worker loads the base, computes the base's side of every text
(as the single-process sweep does) and returns each cut's result entry; the driver puts the entries
back in plan order and writes the output once (sweep.write_sweep), so the result does not depend on
which worker did what, or on a worker dying midway (its unit is redone elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moeprint.cluster import ClusterSettings, PoolEvent, UnitResult, WorkerHello, connected, node_name, run_units
from moeprint.errors import MoeprintError
from moeprint.evaluate.sweep import CutEvaluator, SweepJob
from moeprint.record.store import model_fingerprint


def sweep_on_ray(
    job: SweepJob,
    cluster: ClusterSettings,
    *,
    progress: bool = True,
    observer: Callable[[PoolEvent], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """(cut entries in plan order, number of text windows)."""
    cluster.check()
    driver_sha256 = model_fingerprint(Path(job.model_path))
    seen: list[WorkerHello] = []

    def check_hello(worker: int, hello: WorkerHello) -> None:
        where = f"Ray worker {worker} (node {hello.node})"
        if hello.model_sha256 != driver_sha256:
            raise MoeprintError(
                f"{where} sees different model files at {job.model_path} (model hash "
                f"{hello.model_sha256[:12]}..., the driver's is {driver_sha256[:12]}...); "
                "every node must see the same model."
            )
        if seen and hello.info["n_windows"] != seen[0].info["n_windows"]:
            raise MoeprintError(
                f"{where} cuts the texts into different windows than the others (different tokenizer files?)."
            )
        seen.append(hello)

    units = list(range(len(job.plans)))
    with connected(cluster):
        results, hellos = run_units(
            cluster, SweepWorker, (job,), units, check_hello, label="sweep", progress=progress, observer=observer
        )
    return [results[i] for i in units], hellos[0].info["n_windows"]


class SweepWorker:
    """One Ray actor's state: the loaded base and its reference side of the texts."""

    def __init__(self, job: SweepJob):
        self.evaluator = CutEvaluator(job)
        self.model_sha256 = model_fingerprint(Path(job.model_path))

    def hello(self) -> WorkerHello:
        return WorkerHello(node_name(), os.getpid(), self.model_sha256, {"n_windows": len(self.evaluator.windows)})

    def run(self, index: int) -> UnitResult:
        return UnitResult(self.evaluator.evaluate(index), self.evaluator.n_tokens)
