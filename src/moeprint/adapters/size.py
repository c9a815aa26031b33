"""Parameter counts of a model and of its cuts, from a config alone.

The family's own transformers class (`config.architectures[0]`) is built on the meta device, so the count
is exactly what the checkpoint holds for the modules transformers loads (multi-token-prediction layers,
which transformers drops at load, are not counted) and costs no memory, even for a 671B config.
"""

from __future__ import annotations

from typing import Any

import torch

from moeprint.adapters import adapter_for
from moeprint.errors import MoeprintError


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters (and persistent buffers) of the model `config` describes (a config.json dict)."""
    import transformers

    adapter_for(config)  # refuses unknown or dense architectures with one clear line
    arch = config["architectures"][0]
    if not hasattr(transformers, arch):
        raise MoeprintError(f"transformers {transformers.__version__} has no class {arch}.")
    # the class's own config class, not the model type: Kimi-K2 names a type transformers does not register
    fields = {k: v for k, v in config.items() if k not in ("model_type", "quantization_config", "auto_map")}
    model_class = getattr(transformers, arch)
    with torch.device("meta"):
        model = model_class._from_config(model_class.config_class(**fields))
    return stored_numel(model)


def stored_numel(model: torch.nn.Module) -> int:
    """Parameters plus persistent buffers (DeepSeek-V3's `e_score_correction_bias` is a buffer, and a
    checkpoint tensor): what a checkpoint of `model` holds, tied weights counted once."""
    saved = set(model.state_dict(keep_vars=True))
    buffers = sum(b.numel() for name, b in model.named_buffers() if name in saved)
    return sum(p.numel() for p in model.parameters()) + buffers


def cut_parameter_count(config: dict[str, Any], n_experts: int) -> int:
    """Parameters of the checkpoint that keeps `n_experts` routed experts in every MoE layer."""
    return parameter_count(adapter_for(config).pruned_config(config, n_experts))
