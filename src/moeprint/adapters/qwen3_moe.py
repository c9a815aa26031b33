"""Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3-30B-A3B 48 layers x 128 experts top-8, Qwen3-235B-A22B 94 x 128 top-8.

Router `mlp.gate` (no bias): softmax over all experts in float32, top-k, renormalised over the k only
if `norm_topk_prob` (true in the released models, false by default), then cast to the logits' dtype.
Dense layers: decoder layer i is a MoE layer unless i is in `mlp_only_layers` or
(i + 1) % `decoder_sparse_step` != 0 (the released models use every layer). Dense layers are left
out of plans, rankings and traces: `layer_j` there is the j-th MoE layer.
Config: hub configs say `num_experts`; transformers 5.23 writes it back as `num_local_experts` (an alias).
On disk: `model.layers.{L}.mlp.gate.weight (E,H)` and per expert
`model.layers.{L}.mlp.experts.{e}.gate_proj|up_proj.weight (I,H)`, `.down_proj.weight (H,I)`;
fused at load into `mlp.experts.gate_up_proj (E,2I,H)` / `mlp.experts.down_proj (E,H,I)` (both declared).
"""

from __future__ import annotations

from typing import Any

from moeprint.adapters.base import ExpertTensor, MoEAdapter, config_get
from moeprint.adapters.common import gated_expert_forward, router_output_to_topk, softmax_topk_in_logits_dtype


def _is_moe_layer(config: Any, layer: int) -> bool:
    num_experts = config_get(config, "num_experts", config_get(config, "num_local_experts", 0))
    step = config_get(config, "decoder_sparse_step", 1)
    return (
        layer not in (config_get(config, "mlp_only_layers", []) or []) and num_experts > 0 and (layer + 1) % step == 0
    )


QWEN3_MOE = MoEAdapter(
    name="qwen3_moe",
    architectures=("Qwen3MoeForCausalLM",),
    model_type="qwen3_moe",
    num_layers_key="num_hidden_layers",
    num_experts_key="num_experts",
    num_experts_aliases=("num_local_experts",),
    top_k_key="num_experts_per_tok",
    layers_path="model.layers",
    moe_attr="mlp",
    router_attr="gate",
    experts_attr="experts",
    expert_tensors=(
        ExpertTensor("model.layers.{layer}.mlp.experts.gate_up_proj"),
        ExpertTensor("model.layers.{layer}.mlp.experts.down_proj"),
    ),
    router_tensors=(ExpertTensor("model.layers.{layer}.mlp.gate.weight"),),
    per_expert_tensors=(
        "model.layers.{layer}.mlp.experts.{expert}.gate_proj.weight",
        "model.layers.{layer}.mlp.experts.{expert}.up_proj.weight",
        "model.layers.{layer}.mlp.experts.{expert}.down_proj.weight",
    ),
    router_output_to_topk=router_output_to_topk,
    logits_to_topk=softmax_topk_in_logits_dtype,
    routing_options=(("normalize", "norm_topk_prob", False),),
    expert_forward=gated_expert_forward,
    is_moe_layer=_is_moe_layer,
)
