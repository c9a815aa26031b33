"""Ray fan-out on the testbed, as ratios measured in one run.

1. dispatch overhead: the builtin prompts recorded on the testbed by `record --ray --workers N` (a local
   Ray instance started beforehand, as on a cluster) vs the same N shards recorded by N plain
   `moeprint record --shard I/N` processes started together, then `moeprint merge-runs`.
   Both sides pay process start, imports and model loading per worker; both results are checked to be
   byte-identical. Wall time (the point is parallelism), best of --repeats interleaved pairs.
   Target: Ray within 10 % of the plain shards. Ray's own start-up (`ray.init`) is printed apart: a
   cluster pays it once, not per recording.
2. trace size on disk (zstd Parquet) per token per MoE layer, for the default, --expert-norms and --logits.

    PYTHONPATH=src python bench/ray.py [--workers 2] [--max-new-tokens 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named ray.py: drop its folder from the path so that `import ray` finds the package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
import ray  # noqa: E402
from moeprint.cluster import ClusterSettings
from moeprint.prompts import load_prompts
from moeprint.record import record
from moeprint.record.distributed import record_on_ray
from moeprint.record.options import RecordSettings
from moeprint.testbed import testbed_path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_data(run: Path) -> dict[str, bytes]:
    """Traces and prompts (a merge of plain shards also names its sources in the manifest)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*.parquet"))}


def plain_shards(model: Path, out: Path, args) -> float:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    common = [
        "--prompts",
        "builtin",
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--batch-size",
        str(args.batch_size),
        "--quiet",
    ]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moeprint",
                "record",
                str(model),
                *common,
                "--shard",
                f"{i}/{args.workers}",
                "--out",
                str(out / f"s{i}"),
            ],
            env=env,
        )
        for i in range(args.workers)
    ]
    if any(p.wait() for p in procs):
        raise SystemExit("a plain shard failed")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "moeprint",
            "merge-runs",
            *[str(out / f"s{i}") for i in range(args.workers)],
            "--out",
            str(out / "merged"),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def on_ray(model: Path, out: Path, args) -> float:
    settings = RecordSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    start = time.perf_counter()
    record_on_ray(
        model, load_prompts("builtin"), out / "merged", settings, ClusterSettings(workers=args.workers), progress=False
    )
    return time.perf_counter() - start


def trace_sizes(model: Path, tmp: Path) -> None:
    prompts = load_prompts("builtin")[:8]
    print("trace size on disk (zstd Parquet), bytes per token per MoE layer:")
    for name, extra in (
        ("default (ids, weights)", {}),
        ("--expert-norms", {"expert_norms": True}),
        ("--logits", {"logits": True}),
    ):
        run = record(
            model,
            prompts,
            tmp / f"size-{len(extra)}-{name[2:8]}",
            RecordSettings(max_new_tokens=32, batch_size=8, **extra),
            progress=False,
        )
        m = json.loads((run / "manifest.json").read_text())
        size = sum(p.stat().st_size for p in (run / "traces").glob("*.parquet"))
        print(
            f"  {name:24s} {size / (m['n_tokens'] * m['num_layers']):7.1f}  "
            f"({m['num_layers']} layers, {m['num_experts']} experts, top-{m['top_k']})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model = testbed_path()

    start = time.perf_counter()
    ray.init(
        num_cpus=args.workers,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}},
    )
    startup = time.perf_counter() - start
    plain, distributed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            plain.append(plain_shards(model, tmp / f"plain{r}", args))
            distributed.append(on_ray(model, tmp / f"ray{r}", args))
            a, b = run_data(tmp / f"plain{r}" / "merged"), run_data(tmp / f"ray{r}" / "merged")
            same = a == b
            if not same:
                print("differ:", sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))
            print(f"repeat {r}: plain shards {plain[-1]:.1f} s, ray {distributed[-1]:.1f} s, identical runs: {same}")
            if not same:
                raise SystemExit("the Ray run differs from the merged plain shards")
        ray.shutdown()
        n = len(load_prompts("builtin"))
        print(f"\n{n} prompts, {args.workers} workers, batch {args.batch_size}, {args.max_new_tokens} new tokens")
        print(f"plain --shard processes + merge-runs: {min(plain):.1f} s (best of {args.repeats})")
        print(f"record --ray:                         {min(distributed):.1f} s (best of {args.repeats})")
        print(f"ray / plain: {min(distributed) / min(plain):.3f}   (target <= 1.10)")
        print(f"ray.init (once per cluster, not counted): {startup:.1f} s\n")
        trace_sizes(model, tmp)


if __name__ == "__main__":
    main()
