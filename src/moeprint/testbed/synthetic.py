"""Checkpoints in their family's quantised layout, built offline (tests, the factory check, the benchmark).

`to_mxfp4_checkpoint` rewrites a float checkpoint's 3-D expert weights with the adapter's `QuantLayout`
(for the testbed's family, the layout of its published weights) and adds the layout's
`quantization_config` to its config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.adapters.gpt_oss import GPT_OSS  # the testbed's family
from moeprint.io.shards import list_tensors, read_tensor

# The quantisation_config the testbed family's published checkpoints carry (asked of its adapter).
MXFP4_QUANTIZATION_CONFIG = GPT_OSS.quantisation.quantization_config()


def to_mxfp4_checkpoint(src_dir: str | Path, out_dir: str | Path, other_dtype: torch.dtype = torch.bfloat16) -> Path:
    """Quantise the expert weight matrices of `src_dir` to the adapter's layout; other tensors become `other_dtype`."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    config = load_config_dict(src_dir)
    adapter = adapter_for(config)
    layout = adapter.quantisation
    if layout is None:
        raise ValueError(f"{adapter.name} declares no quantised layout")
    expert_names = {
        t.template.format(layer=i) for i in range(adapter.num_layers(config)) for t in adapter.expert_tensors
    }
    out: dict[str, torch.Tensor] = {}
    for info in list_tensors(src_dir):
        tensor = read_tensor(src_dir, info)
        if info.name in expert_names and tensor.ndim == 3:
            data, scales = layout.encode(tensor)  # (E, in, out) -> the layout's two tensors
            out[info.name + layout.data_suffix], out[info.name + layout.scale_suffix] = data, scales
        elif tensor.is_floating_point():
            out[info.name] = tensor.to(other_dtype)
        else:
            out[info.name] = tensor
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, out_dir / "model.safetensors", metadata={"format": "pt"})
    for path in src_dir.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != "config.json":
            shutil.copy2(path, out_dir / path.name)
    config = {**config, "quantization_config": layout.quantization_config(), "dtype": "bfloat16"}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def build_mxfp4_model(out_dir: str | Path, **tiny_kwargs) -> Path:
    """A tiny random testbed-family model saved in its quantised layout (hidden and intermediate sizes multiples of 32)."""
    from moeprint.testbed.tiny import build_tiny_model

    out_dir = Path(out_dir)
    float_dir = build_tiny_model(out_dir.with_name(out_dir.name + ".float"), **tiny_kwargs)
    to_mxfp4_checkpoint(float_dir, out_dir)
    shutil.rmtree(float_dir)
    return out_dir


def shapes_of(model_dir: str | Path) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of every tensor, from headers only."""
    return [(t.name, t.dtype, t.shape) for t in list_tensors(model_dir)]
