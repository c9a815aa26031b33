"""Checkpoints in the original MXFP4 layout, built offline (tests, the factory check, the benchmark).

`to_mxfp4_checkpoint` rewrites a float checkpoint's 3-D expert weights as `*_blocks`/`*_scales`
(the layout of the published gpt-oss weights) and adds `quantization_config` to its config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.io.shards import list_tensors, read_tensor
from moeprint.prune.mxfp4 import quantize_mxfp4

# As in the published gpt-oss config: attention, router, embeddings and head stay in bf16.
MXFP4_QUANTIZATION_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}


def to_mxfp4_checkpoint(src_dir: str | Path, out_dir: str | Path, other_dtype: torch.dtype = torch.bfloat16) -> Path:
    """Quantise the expert weight matrices of `src_dir` to MXFP4; other tensors become `other_dtype`."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    config = load_config_dict(src_dir)
    adapter = adapter_for(config)
    expert_names = {
        t.template.format(layer=i) for i in range(adapter.num_layers(config)) for t in adapter.expert_tensors
    }
    out: dict[str, torch.Tensor] = {}
    for info in list_tensors(src_dir):
        tensor = read_tensor(src_dir, info)
        if info.name in expert_names and tensor.ndim == 3:
            out[info.name + "_blocks"], out[info.name + "_scales"] = quantize_mxfp4(tensor)  # (E, in, out) -> MXFP4
        elif tensor.is_floating_point():
            out[info.name] = tensor.to(other_dtype)
        else:
            out[info.name] = tensor
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, out_dir / "model.safetensors", metadata={"format": "pt"})
    for path in src_dir.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != "config.json":
            shutil.copy2(path, out_dir / path.name)
    config = {**config, "quantization_config": MXFP4_QUANTIZATION_CONFIG, "dtype": "bfloat16"}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def build_mxfp4_model(out_dir: str | Path, **tiny_kwargs) -> Path:
    """A tiny random gpt-oss model saved in the MXFP4 layout (hidden and intermediate sizes multiples of 32)."""
    from moeprint.testbed.tiny import build_tiny_model

    out_dir = Path(out_dir)
    float_dir = build_tiny_model(out_dir.with_name(out_dir.name + ".float"), **tiny_kwargs)
    to_mxfp4_checkpoint(float_dir, out_dir)
    shutil.rmtree(float_dir)
    return out_dir


def shapes_of(model_dir: str | Path) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of every tensor, from headers only."""
    return [(t.name, t.dtype, t.shape) for t in list_tensors(model_dir)]
