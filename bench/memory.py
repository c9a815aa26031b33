"""Benchmark: peak memory of record, mask, evaluate, sweep and prune on gpt-oss-20b stand-ins.

Builds real-format stand-ins (moeprint.testbed.standin: every gpt-oss-20b dimension, MXFP4 experts, the
o200k_harmony tokenizer) with 1 and 2 layers, runs each stage once through the real CLI on the CPU in
bfloat16 (each in its own process), and prints from that one run:
  - the peak RSS of each stage at each layer count, beside the memory model of docs/memory.md;
  - peak / model (the goal: <= 1.3);
  - a straight-line extrapolation of each stage's peak (a + b * layers) to gpt-oss-20b (24 layers) and, with
    the per-layer part scaled by 120b's per-layer weight bytes, to gpt-oss-120b (36 layers x 128 experts).

Needs the js-tiktoken ranks (.ci/run installs them into .deps/npm). Disk: ~6 GB in --dir.
Usage: python bench/memory.py [--layers 1,2] [--dir /tmp/moeprint-memory] [--stages record,mask,evaluate,sweep,prune]
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
    import moeprint.io.loader
    moeprint.io.loader.expertwise_mxfp4_dequantisation = contextlib.nullcontext
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
    """bf16 bytes of the dequantised model (what the CPU holds after load) and of the MXFP4 files."""
    shared = 2 * V * H * BF16 + H * BF16  # embeddings + head + final norm
    attn = ((Q * H + Q) + 2 * (KV * H + KV) + (H * Q + H) + 64 + 2 * H) * BF16
    router = (experts * H + experts) * BF16
    experts_bf16 = experts * (H * 2 * I + I * H + 2 * I + H) * BF16
    experts_mxfp4 = experts * (2 * I * (H // 32) * 17 + H * (I // 32) * 17 + (2 * I + H) * BF16)
    return {
        "bf16": shared + layers * (attn + router + experts_bf16),
        "mxfp4": shared + layers * (attn + router + experts_mxfp4),
        "largest_tensor": V * H * BF16,
        "mxfp4_experts_per_layer": experts_mxfp4,
    }


def dequant_workspace(experts: int = 32, expertwise: bool = True) -> float:
    """Bytes live during the load beyond the final weights: the MXFP4 -> bf16 conversion of one layer's
    gate_up_proj (the largest expert tensor), derived from transformers 5.24 (docs/memory.md, "Loading").

    Stock (integrations/mxfp4.py `_convert_moe_packed_tensors`), n = E x 2I x H values: the blocks (n/2 bytes)
    and scales (n/32 uint8, n/32 int32) stay alive; the output (E*R*G, 32) bf16 (2n) is filled per chunk of
    32768*1024 rows, each chunk needing an int32 index of its nibbles (4 bytes per byte of blocks) and the bf16
    lookup result (2 bytes per byte); then `.transpose(1, 2).contiguous()` makes the final (2n) while the output
    (2n) is alive. Peak = max(lookup phase, transpose phase); the final 2n counts as weights. Expert-wise
    (moeprint's loader): the same steps on one expert's slice, written into the final tensor."""
    n = experts * 2 * I * H
    blocks, scales_u8 = n / 2, n / 32

    def stock(values: float) -> float:
        rows = values / 32
        chunk = min(rows, 32768 * 1024) * 16  # bytes of blocks per chunk
        lookup = 2 * values + chunk * 4 + chunk * 2  # output + int32 index + bf16 lookup result
        transpose = 2 * values + 2 * values  # output + its contiguous transposed copy
        return max(lookup, transpose)

    if expertwise:
        per_expert = n / experts
        return blocks + scales_u8 + stock(per_expert) + per_expert / 32 * 4  # + that expert's int32 scales
    return blocks + scales_u8 + n / 32 * 4 + stock(n) - 2 * n


def model_bytes(stage: str, layers: int, batch_tokens: int = 512, kept: int = 8, expertwise: bool = True) -> float:
    """docs/memory.md's memory model for the stand-in commands below (CPU, bf16), without the process
    baseline (measured separately): weights + the larger of the load workspace and the run's."""
    w = weight_bytes(layers)
    load = dequant_workspace(32, expertwise)
    logits = batch_tokens * V * 4  # one float32 (B, S, V) log-prob tensor
    if stage in ("record", "mask"):
        return w["bf16"] + load
    if stage in ("evaluate", "sweep"):
        return w["bf16"] + max(load, 3 * logits)  # logits, log-softmax and the cut's copy
    if stage == "prune":  # streamed: one input tensor, the output shard being filled (<= --shard-size 5 GB), buffers
        output = w["mxfp4"] - layers * w["mxfp4_experts_per_layer"] * (1 - kept / 32)
        return w["largest_tensor"] + min(output, 5 * GB) + 0.3 * GB
    raise ValueError(stage)


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

    per_layer_120b = (weight_bytes(2, 128)["bf16"] - weight_bytes(1, 128)["bf16"]) / (
        weight_bytes(2)["bf16"] - weight_bytes(1)["bf16"]
    )
    # the load workspace is one layer's conversion: it scales with experts, not layers
    workspace_120b = dequant_workspace(128, not stock) - dequant_workspace(32, not stock)
    print(
        f"\nMXFP4 dequantisation: {'stock (whole tensor)' if stock else 'expert-wise (moeprint loader)'}; "
        f"process baseline {baseline:.2f} GB anon (measured, included in 'model')"
    )
    print(
        f"{'stage':<9} {'layers':>6} {'RSS GB':>7} {'anon GB':>8} {'model GB':>9} {'RSS/model':>10} {'anon/model':>11}"
        "   extrapolated anon GB: 20b (24 L), 120b (36 L)"
    )
    for stage, by_layers in peaks.items():
        Ls = sorted(by_layers)
        for L in Ls:
            m = baseline + model_bytes(stage, L, expertwise=not stock) / GB
            rss, anon = by_layers[L]
            print(f"{stage:<9} {L:>6} {rss:>7.2f} {anon:>8.2f} {m:>9.2f} {rss / m:>10.2f} {anon / m:>11.2f}")
        if len(Ls) >= 2:
            b = (by_layers[Ls[-1]][1] - by_layers[Ls[0]][1]) / (Ls[-1] - Ls[0])
            a = by_layers[Ls[0]][1] - b * Ls[0]
            extra = workspace_120b / GB if stage != "prune" else 0.0
            m24 = baseline + model_bytes(stage, 24, expertwise=not stock) / GB
            print(
                f"{'':<56}   {a + 24 * b:.1f}, {a + 36 * b * per_layer_120b + extra:.1f}"
                f"   (a = {a:.2f} GB + {b:.2f} GB/layer; model: {m24:.1f} at 24 layers)"
            )


if __name__ == "__main__":
    main()
