"""Benchmark: prune a synthetic MXFP4 checkpoint with real gpt-oss-20b expert shapes.

Prints, from one run:
  - peak RSS of the pruning process vs the target (largest input tensor + one output shard + 300 MB);
  - wall time of the prune vs a plain copy of the bytes it wrote (target <= 1.5x).

The checkpoint has LAYERS MoE layers of gpt-oss-20b shape (32 experts, gate_up_proj_blocks (32, 5760, 90, 16),
down_proj_blocks (32, 2880, 90, 16), scales, biases, router) plus bf16 attention weights, in two input shards.
Usage: python bench/prune.py [--layers 3] [--experts 16] [--shard-size 500MB] [--dir /tmp/moeprint-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

H, I, E, TOP_K, Q_DIM, KV_DIM = 2880, 2880, 32, 4, 4096, 512


def build_checkpoint(root: Path, layers: int) -> Path:
    import torch
    from safetensors.torch import save_file

    from moeprint.testbed.synthetic import MXFP4_QUANTIZATION_CONFIG

    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    weight_map = {}
    half = (layers + 1) // 2
    for shard_index, shard_layers in enumerate((range(0, half), range(half, layers))):
        shard = f"model-{shard_index + 1:05d}-of-00002.safetensors"
        tensors = {}
        for i in shard_layers:
            p = f"model.layers.{i}"
            for proj, rows, n_in in (("gate_up_proj", 2 * I, H), ("down_proj", H, I)):
                tensors[f"{p}.mlp.experts.{proj}_blocks"] = torch.randint(
                    0, 256, (E, rows, n_in // 32, 16), dtype=torch.uint8, generator=g
                )
                tensors[f"{p}.mlp.experts.{proj}_scales"] = torch.randint(
                    118, 128, (E, rows, n_in // 32), dtype=torch.uint8, generator=g
                )
                tensors[f"{p}.mlp.experts.{proj}_bias"] = torch.randn(E, rows, generator=g).to(torch.bfloat16)
            tensors[f"{p}.mlp.router.weight"] = torch.randn(E, H, generator=g).to(torch.bfloat16)
            tensors[f"{p}.mlp.router.bias"] = torch.randn(E, generator=g).to(torch.bfloat16)
            tensors[f"{p}.self_attn.q_proj.weight"] = torch.randn(Q_DIM, H, generator=g).to(torch.bfloat16)
            tensors[f"{p}.self_attn.o_proj.weight"] = torch.randn(H, Q_DIM, generator=g).to(torch.bfloat16)
            tensors[f"{p}.self_attn.k_proj.weight"] = torch.randn(KV_DIM, H, generator=g).to(torch.bfloat16)
        save_file(tensors, root / shard, metadata={"format": "pt"})
        weight_map.update({name: shard for name in tensors})
        del tensors
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "num_hidden_layers": layers,
        "num_local_experts": E,
        "num_experts_per_tok": TOP_K,
        "hidden_size": H,
        "intermediate_size": I,
        "quantization_config": MXFP4_QUANTIZATION_CONFIG,
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def peak_rss_kb() -> int:
    """VmHWM of this process. (ru_maxrss would include the parent's peak: Linux carries it over fork + exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(model: str, n_experts: int, out: str, shard_size: str) -> None:
    """Runs in a fresh process so that ru_maxrss is the prune's own peak."""
    import torch  # noqa: F401  (imported before measuring the baseline)

    from moeprint.adapters import load_config_dict
    from moeprint.io.shards import parse_size
    from moeprint.prune import build_checkpoint as prune
    from moeprint.select.plan import model_signature, plan_from_ranking

    baseline_kb = peak_rss_kb()
    config = load_config_dict(model)
    ranking = {f"layer_{i}": list(range(E - 1, -1, -1)) for i in range(config["num_hidden_layers"])}
    plan = plan_from_ranking(
        ranking, n_experts, model_signature(config), base_model=model, domain="bench", criterion="c"
    )
    start = time.perf_counter()
    result = prune(model, plan, out, shard_size=parse_size(shard_size), card=None, progress=False)
    seconds = time.perf_counter() - start
    peak_kb = peak_rss_kb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_kb / 1024,
                "baseline_mb": baseline_kb / 1024,
                "bytes": result.n_bytes,
                "shards": result.n_shards,
            }
        )
    )


def plain_copy_seconds(src: Path, dst: Path) -> float:
    dst.mkdir(parents=True)
    start = time.perf_counter()
    for path in sorted(src.glob("*.safetensors")):
        shutil.copyfile(path, dst / path.name)  # neither side fsyncs: both measure page-cache writes
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--shard-size", default="500MB")
    ap.add_argument("--dir", default="/tmp/moeprint-bench-prune")
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "N", "OUT", "SHARD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, n, out, shard = args.child
        return child(model, int(n), out, shard)

    from moeprint.io.shards import list_tensors, parse_size

    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    model = build_checkpoint(root / "model", args.layers)
    tensors = list_tensors(model)
    input_bytes = sum(t.nbytes for t in tensors)
    largest = max(t.nbytes for t in tensors)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(model), str(args.experts), str(root / "out"), args.shard_size],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    copy_seconds = plain_copy_seconds(root / "out", root / "copy")
    shard = parse_size(args.shard_size)
    target_mb = (largest + shard) / 2**20 + 300
    print(
        f"input: {input_bytes / 1e9:.2f} GB MXFP4 in 2 shards, {args.layers} gpt-oss-20b MoE layers, largest tensor {largest / 2**20:.0f} MiB"
    )
    print(
        f"prune to {args.experts}/{E} experts: {stats['bytes'] / 1e9:.2f} GB in {stats['shards']} shard(s) of <= {args.shard_size}"
    )
    print(
        f"peak RSS {stats['peak_mb']:.0f} MiB (after imports {stats['baseline_mb']:.0f} MiB); "
        f"target <= largest tensor + one shard + 300 MB = {target_mb:.0f} MiB -> ratio {stats['peak_mb'] / target_mb:.2f}"
    )
    print(
        f"wall time {stats['seconds']:.2f} s vs plain copy of the output bytes {copy_seconds:.2f} s "
        f"-> ratio {stats['seconds'] / copy_seconds:.2f} (target <= 1.5)"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
