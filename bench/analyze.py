"""Aggregation throughput of the analyze core, in routing decisions per second, vs a dict-of-counts loop.

A routing decision is one (token, layer, choice) entry. Both sides get the same in-memory arrays
(gpt-oss-20b shape: 24 layers, 32 experts, top-4; 8 domains x 4 segments); no Parquet I/O is timed.
Run with one thread:  OMP_NUM_THREADS=1 PYTHONPATH=src python bench/analyze.py [--tokens 400000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np

from moeprint.analyze.aggregate import UsageSums


def make_data(n_tokens: int, num_layers: int, num_experts: int, top_k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    # distinct top-k ids per (token, layer), skewed like a real router (a few busy experts)
    logits = rng.gumbel(size=(n_tokens, num_layers, num_experts)).astype(np.float32)
    logits += np.linspace(0, 2, num_experts, dtype=np.float32)[rng.permutation(num_experts)]
    ids = np.argsort(-logits, axis=-1)[..., :top_k].astype(np.int16)  # (T, L, k)
    weights = rng.dirichlet(np.ones(top_k), size=(n_tokens, num_layers)).astype(np.float32)  # (T, L, k)
    group = np.sort(rng.integers(0, 32, n_tokens))  # domain * 4 + segment, contiguous like real parts
    return ids, weights, group


def vectorised(ids, weights, group, num_experts, batch, coactivation):
    sums = UsageSums(
        tuple(f"d{i}" for i in range(8)),
        ("prompt", "think", "answer", "generated"),
        ids.shape[1],
        num_experts,
        ids.shape[2],
        with_coactivation=coactivation,
    )
    for start in range(0, len(ids), batch):
        sl = slice(start, start + batch)
        sums.add_batch(group[sl], ids[sl], weights[sl])
    return sums


def dict_loop(ids, weights, group):
    tokens, weight_sum = defaultdict(int), defaultdict(float)
    id_rows, w_rows, g_rows = ids.tolist(), weights.tolist(), group.tolist()  # conversion not timed separately
    for g, row_ids, row_w in zip(g_rows, id_rows, w_rows):
        for layer, (lid, lw) in enumerate(zip(row_ids, row_w)):
            for e, w in zip(lid, lw):
                tokens[(g, layer, e)] += 1
                weight_sum[(g, layer, e)] += w
    return tokens, weight_sum


def best_of(fn, repeats):
    """(best wall seconds, best CPU seconds of this process, result). CPU time is what one core spent:
    on a shared machine the wall clock also counts time other processes held the core."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--loop-tokens", type=int, default=20_000, help="the Python loop is slow: time it on fewer tokens")
    ap.add_argument("--batch", type=int, default=16384, help="rows per batch (analyze reads 16384 per Parquet batch)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    L, E, k = 24, 32, 4
    ids, weights, group = make_data(args.tokens, L, E, k)
    decisions = ids.size

    t_sums, c_sums, sums = best_of(lambda: vectorised(ids, weights, group, E, args.batch, False), args.repeats)
    t_all, c_all, _ = best_of(lambda: vectorised(ids, weights, group, E, args.batch, True), args.repeats)
    n_loop = min(args.loop_tokens, args.tokens)
    t_loop, c_loop, (loop_tokens, _) = best_of(lambda: dict_loop(ids[:n_loop], weights[:n_loop], group[:n_loop]), 1)
    t_vec_small, _, small = best_of(
        lambda: vectorised(ids[:n_loop], weights[:n_loop], group[:n_loop], E, args.batch, False), args.repeats
    )
    # the two agree (a bench that measures wrong answers is no bench)
    flat = small.tokens.reshape(32, L, E)
    assert all(flat[g, l, e] == c for (g, l, e), c in loop_tokens.items()) and flat.sum() == sum(loop_tokens.values())

    loop_rate = ids[:n_loop].size / t_loop
    loop_cpu_rate = ids[:n_loop].size / c_loop
    print(
        f"data: {args.tokens} tokens x {L} layers x top-{k} = {decisions / 1e6:.1f} M routing decisions, "
        f"batches of {args.batch} rows, 1 thread, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print("                                               wall clock        per CPU-second")
    print(
        f"usage sums (tokens, weight sum, weight max):  {decisions / t_sums / 1e6:8.1f} M/s      "
        f"{decisions / c_sums / 1e6:8.1f} M decisions/s"
    )
    print(
        f"  + co-activation pair counts:                 {decisions / t_all / 1e6:8.1f} M/s      "
        f"{decisions / c_all / 1e6:8.1f} M decisions/s"
    )
    print(
        f"dict-of-counts loop (tokens, weight sum):      {loop_rate / 1e6:8.2f} M/s      "
        f"{loop_cpu_rate / 1e6:8.2f} M decisions/s  (on {n_loop} tokens)"
    )
    print(f"ratio usage sums / loop (same {n_loop} tokens): {(ids[:n_loop].size / t_vec_small) / loop_rate:8.0f}x")
    print(f"ratio usage sums / loop (full-size rate):       {(decisions / t_sums) / loop_rate:8.0f}x")


if __name__ == "__main__":
    main()
