"""Mixtral (MixtralForCausalLM): 32 layers x 8 experts, top-2 (8x7B and 8x22B, 56 layers).

Router `mlp.gate` (no bias): softmax over all experts in float32, top-2, ALWAYS renormalised;
the weights stay float32. Every decoder layer is a MoE layer.
On disk (hub checkpoints, and transformers 5 `save_pretrained`, which writes the original format back):
`model.layers.{L}.block_sparse_moe.gate.weight (E,H)` and per expert
`model.layers.{L}.block_sparse_moe.experts.{e}.w1|w3.weight (I,H)` (gate, up), `.w2.weight (H,I)` (down).
transformers 5 renames block_sparse_moe -> mlp and fuses w1|w3 into `mlp.experts.gate_up_proj (E,2I,H)`,
w2 into `mlp.experts.down_proj (E,H,I)` at load; `save_pretrained(save_original_format=False)` writes the
fused names, so both layouts are declared.
"""

from __future__ import annotations

import torch

from moeprint.adapters.base import ExpertTensor, MoEAdapter
from moeprint.adapters.common import gated_expert_forward, router_output_to_topk, softmax_topk


def _logits_to_topk(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return softmax_topk(logits, top_k, normalize=True, out_dtype=None)


MIXTRAL = MoEAdapter(
    name="mixtral",
    architectures=("MixtralForCausalLM",),
    model_type="mixtral",
    num_layers_key="num_hidden_layers",
    num_experts_key="num_local_experts",
    num_experts_aliases=("num_experts",),
    top_k_key="num_experts_per_tok",
    layers_path="model.layers",
    moe_attr="mlp",
    router_attr="gate",
    experts_attr="experts",
    expert_tensors=(  # fused layout (transformers 5 in memory, save_original_format=False)
        ExpertTensor("model.layers.{layer}.mlp.experts.gate_up_proj"),
        ExpertTensor("model.layers.{layer}.mlp.experts.down_proj"),
    ),
    router_tensors=(
        ExpertTensor("model.layers.{layer}.block_sparse_moe.gate.weight"),  # original layout
        ExpertTensor("model.layers.{layer}.mlp.gate.weight"),  # fused layout
    ),
    per_expert_tensors=(
        "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight",
        "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight",
        "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight",
    ),
    router_output_to_topk=router_output_to_topk,
    logits_to_topk=_logits_to_topk,
    expert_forward=gated_expert_forward,
)
