"""OLMoE (OlmoeForCausalLM): OLMoE-1B-7B 16 layers x 64 experts, top-8.

Router `mlp.gate` (no bias): softmax over all experts in float32, top-k, renormalised over the k only
if `norm_topk_prob` (false in the released models and by default), then cast to the logits' dtype.
Every decoder layer is a MoE layer. Config key `num_experts` (`num_local_experts` is an alias).
On disk: `model.layers.{L}.mlp.gate.weight (E,H)` and per expert
`model.layers.{L}.mlp.experts.{e}.gate_proj|up_proj.weight (I,H)`, `.down_proj.weight (H,I)`;
fused at load into `mlp.experts.gate_up_proj (E,2I,H)` / `mlp.experts.down_proj (E,H,I)` (both declared).
"""

from __future__ import annotations

from moeprint.adapters.base import ExpertTensor, MoEAdapter
from moeprint.adapters.common import gated_expert_forward, router_output_to_topk, softmax_topk_in_logits_dtype

OLMOE = MoEAdapter(
    name="olmoe",
    architectures=("OlmoeForCausalLM",),
    model_type="olmoe",
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
)
