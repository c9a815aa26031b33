"""Benchmark: peak memory of record, mask, evaluate, sweep and prune on gpt-oss-20b stand-ins.

Builds real-format stand-ins (moeprint.testbed.standin: every gpt-oss-20b dimension, MXFP4 experts, the
o200k_harmony tokenizer) with 1 and 2 layers, runs each stage once through the real CLI on the CPU in
bfloat16 (each in its own process), and prints from that one run:
  - the peak RSS and peak anonymous memory of each stage at each layer count, beside the memory model of
    docs/memory.md (derived from the shapes and from transformers' loading code, plus the process baseline:
    interpreter, torch, transformers and the tokenizer, measured in a process of its own);
  - peak / model (the goal: <= 1.3);
  - a straight-line extrapolation of each stage's anonymous peak (a + b * layers) to gpt-oss-20b (24 layers)
    and, with the per-layer part scaled by 120b's experts and the load workspace by the model's, to
    gpt-oss-120b (36 layers x 128 experts).
`--stock-dequant` loads with transformers' own whole-tensor MXFP4 dequantisation instead of moeprint's
expert-wise one (docs/memory.md, "Loading").

Needs the js-tiktoken ranks (.ci/run installs them into .deps/npm). Disk: ~6 GB in --dir.
Usage: python bench/memory.py [--layers 1,2] [--dir /tmp/moeprint-memory] [--stages record,mask,evaluate,sweep,prune]
       [--stock-dequant]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

GB = 1e9
V, H, I, Q, KV = 201088, 2880, 2880, 4096, 512
BF16 = 2

# Run one CLI command in this process; report its peak RSS (ru_maxrss, KiB on Linux) and its peak anonymous
# RSS (sampled every 20 ms): RSS also counts the page cache of the memory-mapped safetensors, which the
# kernel can drop, so the anonymous part is the memory the stage really needs.
WRAPPER = """
import contextlib, os, resource, sys, threading, time
from moeprint.cli import main
if os.environ.get("MOEPRINT_BENCH_STOCK_DEQUANT"):  # measure transformers' own whole-tensor dequantisation
    import moeprint.adapters.mxfp4
    moeprint.adapters.mxfp4.expertwise_mxfp4_dequantisation = contextlib.nullcontext
peak = [0]
def sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
try:
    if sys.argv[2] == "--baseline":  # the process alone: interpreter, torch, transformers, the tokenizer
        import torch, transformers.models.gpt_oss.modeling_gpt_oss
        from moeprint.io.loader import load_tokenizer
        load_tokenizer(sys.argv[3])
        time.sleep(0.1)
    else:
        main(sys.argv[2:])
finally:
    open(sys.argv[1], "w").write(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024} {peak[0]}")
"""


def weight_bytes(layers: int, experts: int = 32) -> dict[str, float]:
    """Bytes of the loaded model (bf16 on the CPU) and of the MXFP4 files.

    `dequantised`: the expert matrices transformers converts from MXFP4 into new (anonymous) memory;
    `mapped`: every other tensor, already bf16 in the files, which safetensors hands over as views of the
    memory-mapped shards (page cache: in RSS, not in the anonymous memory)."""
    shared = 2 * V * H * BF16 + H * BF16  # embeddings + head + final norm
    attn = ((Q * H + Q) + 2 * (KV * H + KV) + (H * Q + H) + 64 + 2 * H) * BF16
    router = (experts * H + experts) * BF16
    expert_matrices = experts * (H * 2 * I + I * H) * BF16
    expert_biases = experts * (2 * I + H) * BF16
    experts_mxfp4 = experts * (2 * I * (H // 32) * 17 + H * (I // 32) * 17) + expert_biases
    return {
        "bf16": shared + layers * (attn + router + expert_matrices + expert_biases),
        "dequantised": layers * expert_matrices,
        "mapped": shared + layers * (attn + router + expert_biases),
        "mxfp4": shared + layers * (attn + router + experts_mxfp4),
        "largest_tensor": V * H * BF16,
        "mxfp4_experts_per_layer": experts_mxfp4,
    }


def dequant_workspace(experts: int = 32, expertwise: bool = True) -> float:
    """Bytes live during the load beyond the final weights: the MXFP4 -> bf16 conversion of one layer's
    gate_up_proj (the largest expert tensor), derived from transformers 5.24 (docs/memory.md, "Loading").

    Stock (integrations/mxfp4.py `_convert_moe_packed_tensors`), n = E x 2I x H values: the blocks (n/2 bytes)
    and scales (n/32 uint8 and an int32 copy) stay alive; the output (E*R*G, 32) bf16 (2n) is filled per chunk
    of 32768*1024 rows, each chunk needing per byte of its blocks an int32 index of one nibble half (4 bytes),
    the int64 copy of it that tensor indexing makes (8) and the bf16 lookup result (2); then
    `.transpose(1, 2).contiguous()` makes the final (2n) while the output (2n) is alive. Peak = max(lookup
    phase, transpose phase); the final 2n counts as weights. Expert-wise (moeprint's loader): the same steps
    on one expert's slice at a time, written into the final tensor."""
    n = experts * 2 * I * H
    blocks, scales_u8 = n / 2, n / 32

    def conversion(values: float) -> float:
        chunk = min(values / 32, 32768 * 1024) * 16  # bytes of blocks per chunk
        lookup = 2 * values + chunk * (4 + 8 + 2)  # output + int32 index + its int64 copy + lookup result
        transpose = 2 * values + 2 * values  # output + its contiguous transposed copy
        return max(lookup, transpose) + values / 32 * 4  # + the int32 scales

    if expertwise:
        return blocks + scales_u8 + conversion(n / experts)
    return blocks + scales_u8 + conversion(n) - 2 * n


def scoring_bytes(tokenizer, texts: list[str], max_tokens: int, batch_tokens: int = 4096, cap: int = 1 << 29) -> float:
    """evaluate/sweep's peak beyond the weights while scoring (moeprint.evaluate.text), for the bench's texts:
    per batch of B windows x S tokens one float32 log-prob tensor is c = 4 B S V bytes; the KL step holds the
    base's and the cut's (2c), exp of the base's (c), their difference (c) and the product (c): 5c, plus the
    base log-probs of the other batches cached while they fit in 512 MB."""
    from moeprint.evaluate.inputs import EvalText
    from moeprint.evaluate.text import batches, make_windows

    windows = make_windows([EvalText(f"t{i}", "d", t) for i, t in enumerate(texts)], tokenizer, max_tokens)
    sizes = [4 * len(g) * max(len(windows[i].ids) for i in g) * V for g in batches(windows, batch_tokens)]
    cached, used = [], 0
    for c in sizes:
        if used + c > cap:
            cached = []  # one batch too big: nothing is cached (the base side is recomputed per batch)
            break
        cached.append(c)
        used += c
    return max(5 * c + sum(cached) - (c if cached else 0) for c in sizes)


def model_bytes(stage: str, layers: int, scoring: float, kept: int = 8, expertwise: bool = True) -> dict[str, float]:
    """docs/memory.md's memory model for the stand-in commands below (CPU, bf16), without the process
    baseline (measured separately). anon: the dequantised experts + the larger of the load workspace and the
    run's; rss adds the bf16 tensors mapped from the shards."""
    w = weight_bytes(layers)
    load = dequant_workspace(32, expertwise)
    if stage in ("record", "mask"):  # KV cache and captures of a few short prompts: < 10 MB here
        anon = w["dequantised"] + load
    elif stage in ("evaluate", "sweep"):
        anon = w["dequantised"] + max(load, scoring)
    elif stage == "prune":
        # streamed: the cut expert tensors (kept rows of the blocks, scales, biases) are new memory and wait in
        # the output shard being filled (one shard here); the other tensors are views of the mapped input
        output = w["mxfp4"] - layers * w["mxfp4_experts_per_layer"] * (1 - kept / 32)
        anon = layers * w["mxfp4_experts_per_layer"] * kept / 32
        return {"anon": anon, "rss": w["largest_tensor"] + min(output, 5 * GB) + 0.3 * GB}
    else:
        raise ValueError(stage)
    return {"anon": anon, "rss": anon + w["mapped"]}


def run_stage(args: list[str], tmp: Path, stock: bool = False) -> tuple[float, float]:
    """(peak RSS, peak anonymous RSS) in GB of one CLI command."""
    out = tmp / "rss"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if stock:
        env["MOEPRINT_BENCH_STOCK_DEQUANT"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out), *map(str, args)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"moeprint {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    rss, anon = out.read_text().split()
    return int(rss) / GB, int(anon) / GB


def inputs(root: Path) -> dict[str, Path]:
    words = {
        "law": "court judge statute plaintiff contract appeal verdict tort counsel ruling".split(),
        "math": "integral matrix prime theorem lemma proof vector sum limit series".split(),
    }
    rows = [(d, " ".join(w[(i * 7 + j) % len(w)] for j in range(40))) for d, w in words.items() for i in range(4)]
    paths = {"prompts": root / "prompts.jsonl", "texts": root / "texts.jsonl"}
    paths["prompts"].write_text(
        "".join(
            json.dumps({"id": f"{d}-{i}", "domain": d, "messages": [{"role": "user", "content": t}]}) + "\n"
            for i, (d, t) in enumerate(rows)
        )
    )
    paths["texts"].write_text(
        "".join(json.dumps({"id": f"t{i}", "domain": d, "text": t[::-1]}) + "\n" for i, (d, t) in enumerate(rows))
    )
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="1,2")
    ap.add_argument("--dir", default="/tmp/moeprint-memory")
    ap.add_argument("--stages", default="record,mask,evaluate,sweep,prune")
    ap.add_argument(
        "--stock-dequant", action="store_true", help="load with transformers' whole-tensor MXFP4 dequantisation"
    )
    ns = ap.parse_args()
    stock = ns.stock_dequant
    from moeprint.testbed.standin import build_standin, o200k_ranks_from_js_tiktoken, write_harmony_tokenizer

    root = Path(ns.dir)
    root.mkdir(parents=True, exist_ok=True)
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        ranks = REPO / ".deps/npm/node_modules/js-tiktoken/dist/ranks/o200k_base.js"
        (root / "o200k_base.tiktoken").write_bytes(o200k_ranks_from_js_tiktoken(ranks))
        write_harmony_tokenizer(tok, root / "o200k_base.tiktoken")
    files = inputs(root)
    cpu = ["--device", "cpu", "--dtype", "bfloat16"]
    stages = ns.stages.split(",")
    peaks: dict[str, dict[int, tuple[float, float]]] = {s: {} for s in stages}
    baseline = run_stage(["--baseline", tok], root)[1]  # anon GB of the process before any model is loaded
    for L in [int(x) for x in ns.layers.split(",")]:
        model = root / f"standin-{L}"
        if not (model / "model.safetensors.index.json").exists():
            build_standin(model, L, tok)
        run = root / f"run-{L}{'-stock' if stock else ''}"
        plan = root / f"plan-{L}.json"
        if not (run / "manifest.json").exists():
            peaks.setdefault("record", {})[L] = run_stage(
                [
                    "record",
                    model,
                    "--prompts",
                    files["prompts"],
                    "--max-new-tokens",
                    "8",
                    "--batch-size",
                    "4",
                    "--quiet",
                    *cpu,
                    "--out",
                    run,
                ],
                root,
                stock,
            )
        run_stage(["analyze", run, "--no-stats"], root)
        run_stage(["plan", run, "--domain", "law", "--experts", "8", "--criterion", "frequency", "--out", plan], root)
        commands = {
            "mask": ["mask", model, "--plan", plan, "--prompt", "What is a tort?", "--max-new-tokens", "8", *cpu],
            "evaluate": [
                "evaluate",
                model,
                "--plan",
                plan,
                "--texts",
                files["texts"],
                "--max-tokens",
                "128",
                *cpu,
                "--out",
                root / f"eval-{L}.json",
            ],
            "sweep": [
                "sweep",
                run,
                "--model",
                model,
                "--texts",
                files["texts"],
                "--domains",
                "law",
                "--sizes",
                "8,16",
                "--random-seeds",
                "1",
                "--max-tokens",
                "128",
                "--unverified-calibration",
                "--overwrite",
                *cpu,
                "--out",
                root / f"sweep-{L}",
            ],
            "prune": ["prune", model, "--plan", plan, "--out", root / f"pruned-{L}", "--overwrite", "--no-card"],
        }
        for stage in stages:
            if stage in commands:
                peaks[stage][L] = run_stage(commands[stage], root, stock)
        print(
            f"{L} layer(s): "
            + ", ".join(f"{s} {p[L][0]:.2f} GB (anon {p[L][1]:.2f})" for s, p in peaks.items() if L in p),
            flush=True,
        )

    from moeprint.io.loader import load_tokenizer

    texts = [json.loads(line)["text"] for line in files["texts"].read_text().splitlines()]
    scoring = scoring_bytes(load_tokenizer(tok), texts, max_tokens=128)
    expertwise = not stock
    # 120b: the per-layer anonymous part is the dequantised experts (x4 experts); the load workspace is one
    # layer's conversion, so it scales with experts, not layers
    per_layer_120b = weight_bytes(1, 128)["dequantised"] / weight_bytes(1)["dequantised"]
    print(
        f"\nMXFP4 dequantisation: {'stock (whole tensor)' if stock else 'expert-wise (moeprint loader)'}; "
        f"process baseline {baseline:.2f} GB anon (measured, added to both models); "
        f"load workspace {dequant_workspace(32, expertwise) / GB:.2f} GB; scoring {scoring / GB:.2f} GB"
    )
    print(
        f"{'stage':<9} {'layers':>6} {'RSS GB':>7} {'model':>6} {'RSS/model':>9} {'anon GB':>8} {'model':>6}"
        f" {'anon/model':>10}   extrapolated anon GB: 20b (24 L), 120b (36 L)"
    )
    for stage, by_layers in peaks.items():
        Ls = sorted(by_layers)
        for L in Ls:
            m = model_bytes(stage, L, scoring, expertwise=expertwise)
            m_rss, m_anon = baseline + m["rss"] / GB, baseline + m["anon"] / GB
            rss, anon = by_layers[L]
            print(
                f"{stage:<9} {L:>6} {rss:>7.2f} {m_rss:>6.2f} {rss / m_rss:>9.2f} {anon:>8.2f} {m_anon:>6.2f}"
                f" {anon / m_anon:>10.2f}"
            )
        if len(Ls) >= 2:
            b = (by_layers[Ls[-1]][1] - by_layers[Ls[0]][1]) / (Ls[-1] - Ls[0])
            a = by_layers[Ls[0]][1] - b * Ls[0]
            fixed_20b = max(dequant_workspace(32, expertwise), scoring if stage in ("evaluate", "sweep") else 0)
            fixed_120b = max(dequant_workspace(128, expertwise), scoring if stage in ("evaluate", "sweep") else 0)
            extra = (fixed_120b - fixed_20b) / GB if stage != "prune" else 0.0
            m24 = baseline + model_bytes(stage, 24, scoring, expertwise=expertwise)["anon"] / GB
            print(
                f"{'':<60}   {a + 24 * b:.1f}, {a + 36 * b * per_layer_120b + extra:.1f}"
                f"   (a = {a:.2f} GB + {b:.2f} GB/layer; model: {m24:.1f} at 24 layers)"
            )


if __name__ == "__main__":
    main()
