"""ERNIE-4.5-MoE (Ernie4_5_MoeForCausalLM): ERNIE-4.5-21B-A3B 28 layers (the first dense) x 64 experts, top-6,
2 shared experts; ERNIE-4.5-300B-A47B 54 layers x 64, top-8.

Router `mlp.gate` (no bias; weight kept in float32, input cast to float32):
  logits = x W^T (N,E); probs = softmax(logits) in float32;
  ids = top-k of probs + e_score_correction_bias (selection only; a (1, E) parameter at
  `mlp.gate.moe_statics.e_score_correction_bias`, `mlp.moe_statics.e_score_correction_bias` on disk);
  weights = probs[ids] / max(sum, `moe_norm_min`), cast to the input's dtype.
It returns (logits (N,E), weights (N,k), ids (N,k)); the experts get (hidden, ids, weights).
Shared experts (`mlp.shared_experts`, a dense MLP) are never pruned.
MoE layers: (i + 1) % `moe_layer_interval` == 0 and `moe_layer_start_index` <= i <= `moe_layer_end_index`
(-1 or absent: the last layer). Config keys `moe_num_experts`, `moe_k` (transformers aliases `num_experts`,
`num_experts_per_tok`). On disk per expert `mlp.experts.{e}.gate_proj|up_proj|down_proj.weight`, fused at load
into `mlp.experts.gate_up_proj (E,2I,H)` / `down_proj (E,H,I)` (both declared). transformers never loads
multi-token-prediction tensors (names containing `mtp`); their hub names were not checked here, so a cut copies
any it finds unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from moeprint.adapters.base import ExpertTensor, MoEAdapter, RouterBuffer, config_get
from moeprint.adapters.common import (
    fused_expert_tensors,
    gated_expert_forward,
    per_expert_tensors,
    router_output_to_topk,
)


def _logits_to_topk(
    logits: torch.Tensor, top_k: int, *, e_score_correction_bias: torch.Tensor, norm_min: float
) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(logits, dim=1, dtype=torch.float)  # (N, E)
    ids = torch.topk(probs + e_score_correction_bias.squeeze(), top_k, dim=-1)[1]  # (N, k): the bias chooses
    weights = torch.gather(probs, dim=-1, index=ids)  # (N, k): it does not weigh
    return ids, weights / torch.clamp(weights.sum(dim=-1, keepdim=True), min=norm_min)


def _is_moe_layer(config: Any, layer: int) -> bool:
    start = int(config_get(config, "moe_layer_start_index", 0))
    end = int(config_get(config, "moe_layer_end_index", -1))
    end = int(config_get(config, "num_hidden_layers")) - 1 if end == -1 else end
    interval = int(config_get(config, "moe_layer_interval", 1))
    return (layer + 1) % interval == 0 and start <= layer <= end


_MLP = "model.layers.{layer}.mlp"

ERNIE4_5_MOE = MoEAdapter(
    name="ernie4_5_moe",
    architectures=("Ernie4_5_MoeForCausalLM",),
    model_type="ernie4_5_moe",
    num_layers_key="num_hidden_layers",
    num_experts_key="moe_num_experts",
    num_experts_aliases=("num_experts",),
    top_k_key="moe_k",
    layers_path="model.layers",
    moe_attr="mlp",
    router_attr="gate",
    experts_attr="experts",
    expert_tensors=fused_expert_tensors(_MLP),
    router_tensors=(
        ExpertTensor(f"{_MLP}.gate.weight"),
        ExpertTensor(f"{_MLP}.moe_statics.e_score_correction_bias", axis=1),  # (1, E) as the hub stores it
        ExpertTensor(f"{_MLP}.gate.moe_statics.e_score_correction_bias", axis=1),  # fused layout
    ),
    per_expert_tensors=per_expert_tensors(_MLP),
    router_output_to_topk=router_output_to_topk,
    logits_to_topk=_logits_to_topk,
    routing_options=(("norm_min", "moe_norm_min", 1e-12),),
    router_buffers=(RouterBuffer("e_score_correction_bias", "moe_statics.e_score_correction_bias", axis=1),),
    weights_in_input_dtype=True,
    expert_forward=gated_expert_forward,
    is_moe_layer=_is_moe_layer,
)
