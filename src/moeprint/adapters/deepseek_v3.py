"""DeepSeek-V3 (DeepseekV3ForCausalLM; also Kimi-K2's architecture): DeepSeek-V3 61 layers (3 dense, then
58 MoE) x 256 routed experts, top-8, in 8 groups of 32 of which a token may use 4; Kimi-K2 61 x 384, top-8, 1 group.

Router `mlp.gate` (no bias, weight kept in float32; it casts its input to float32):
  logits = x W^T (N,E); scores = sigmoid(logits);
  choice = scores + e_score_correction_bias (a per-expert buffer used for selection only);
  group score = sum of each group's best two `choice` values; keep the `topk_group` best groups
  (`n_group` contiguous groups of E/n_group experts), the others' choices at -inf;
  ids = top-k of choice; weights = scores[ids] (the bias is not in the weights), divided by their sum
  (+1e-20) if `norm_topk_prob`, times `routed_scaling_factor`.
It returns (logits (N,E), weights (N,k), ids (N,k)), the standard form; the experts get (hidden, ids, weights).
Shared experts (`mlp.shared_experts`, a dense MLP every token passes) are never pruned and never routed.
Dense layers: decoder layer i is a MoE layer iff i >= `first_k_dense_replace`.
On disk: `model.layers.{L}.mlp.gate.weight (E,H)`, `mlp.gate.e_score_correction_bias (E)` and per expert
`mlp.experts.{e}.gate_proj|up_proj|down_proj.weight` (FP8 checkpoints add `.weight_scale_inv` per tensor),
fused at load into `mlp.experts.gate_up_proj (E,2I,H)` / `down_proj (E,H,I)` (both layouts declared).
Config: `n_routed_experts` (transformers aliases `num_local_experts` to it).
Multi-token prediction: the hub checkpoints add `num_nextn_predict_layers` MoE layers after the last one
(`model.layers.61.*` in DeepSeek-V3), which transformers never loads; a cut leaves them out and sets the count to 0.
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


def group_limited_sigmoid_topk(
    logits: torch.Tensor,
    top_k: int,
    *,
    e_score_correction_bias: torch.Tensor,
    n_group: int,
    topk_group: int,
    normalize: bool,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N,k), weights (N,k)) from float32 router logits (N,E), in the router's own order of operations:
    bitwise equality of a masked and a pruned model needs the same arithmetic, not only the same maths."""
    n = logits.shape[-1]
    scores = logits.sigmoid()  # (N, E)
    choice = scores + e_score_correction_bias  # (N, E): selection only
    group_scores = choice.view(-1, n_group, n // n_group).topk(2, dim=-1)[0].sum(dim=-1)  # (N, G)
    best_groups = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]  # (N, topk_group)
    group_mask = torch.zeros_like(group_scores).scatter_(1, best_groups, 1)  # (N, G)
    expert_mask = group_mask.unsqueeze(-1).expand(-1, n_group, n // n_group).reshape(-1, n)  # (N, E)
    choice = choice.masked_fill(~expert_mask.bool(), float("-inf"))
    ids = torch.topk(choice, k=top_k, dim=-1, sorted=False)[1]  # (N, k)
    weights = scores.gather(1, ids)  # (N, k)
    if normalize:
        weights /= weights.sum(dim=-1, keepdim=True) + 1e-20
    return ids, weights * scaling


def _is_moe_layer(config: Any, layer: int) -> bool:
    return layer >= int(config_get(config, "first_k_dense_replace", 0))


_MLP = "model.layers.{layer}.mlp"


def _adapter(name: str, architecture: str, scaling_default: float, n_group_default: int) -> MoEAdapter:
    """DeepSeek-V3 and GLM-4.5 share the router, the experts, the dense-layer rule and the tensor names."""
    return MoEAdapter(
        name=name,
        architectures=(architecture,),
        model_type=name,
        num_layers_key="num_hidden_layers",
        num_experts_key="n_routed_experts",
        num_experts_aliases=("num_local_experts",),
        top_k_key="num_experts_per_tok",
        layers_path="model.layers",
        moe_attr="mlp",
        router_attr="gate",
        experts_attr="experts",
        expert_tensors=fused_expert_tensors(_MLP),
        router_tensors=(ExpertTensor(f"{_MLP}.gate.weight"), ExpertTensor(f"{_MLP}.gate.e_score_correction_bias")),
        # FP8 block scales travel with their expert
        per_expert_tensors=per_expert_tensors(_MLP, suffixes=("weight", "weight_scale_inv")),
        router_output_to_topk=router_output_to_topk,
        logits_to_topk=group_limited_sigmoid_topk,
        routing_options=(
            ("n_group", "n_group", n_group_default),
            ("topk_group", "topk_group", n_group_default),
            ("normalize", "norm_topk_prob", True),
            ("scaling", "routed_scaling_factor", scaling_default),
        ),
        router_buffers=(RouterBuffer("e_score_correction_bias", "e_score_correction_bias"),),
        group_keys=("n_group", "topk_group"),
        expert_forward=gated_expert_forward,
        is_moe_layer=_is_moe_layer,
        mtp=("model.layers.{layer}.", "num_nextn_predict_layers"),
    )


DEEPSEEK_V3 = _adapter("deepseek_v3", "DeepseekV3ForCausalLM", scaling_default=2.5, n_group_default=8)
