"""Qwen3.5-MoE (Qwen3_5MoeForConditionalGeneration on the hub, Qwen3_5MoeForCausalLM for the text model):
Qwen3.5-397B-A17B 60 layers x 512 experts top-10, Qwen3.5-35B-A3B 40 x 256 top-8; every layer MoE, with
Gated-DeltaNet and full-attention layers mixed (`layer_types`).

Router `mlp.gate` (no bias): softmax over all experts in float32, top-k, ALWAYS renormalised, cast to the
logits' dtype; returns (logits (N,E), weights (N,k), ids (N,k)).
Shared expert `mlp.shared_expert` (a dense MLP) scaled by sigmoid(`mlp.shared_expert_gate` (1,H)): never pruned.
Config: the hub config nests the language model under `text_config` (`num_experts`, `num_experts_per_tok`);
AutoModelForCausalLM loads the text model alone (Qwen3_5MoeForCausalLM, a `qwen3_5_moe_text` config that
names no architecture).
On disk the hub's folders prefix the text model with `model.language_model.` (the text model alone saves
`model.`); experts are fused, `mlp.experts.gate_up_proj (E,2I,H)` / `down_proj (E,H,I)`, or per expert
`mlp.experts.{e}.gate_proj|up_proj|down_proj.weight` as transformers' `save_pretrained` writes them by default.
Multi-token prediction (`mtp.*`, `text_config.mtp_num_hidden_layers`) is never loaded by transformers; a cut
leaves it out and sets the count to 0.
"""

from __future__ import annotations

import torch

from moeprint.adapters.base import ExpertTensor, MoEAdapter
from moeprint.adapters.common import (
    fused_expert_tensors,
    gated_expert_forward,
    per_expert_tensors,
    router_output_to_topk,
    softmax_topk,
)

_PREFIXES = ("model.language_model.layers.{layer}.mlp", "model.layers.{layer}.mlp")


def _logits_to_topk(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return softmax_topk(logits, top_k, normalize=True, out_dtype=logits.dtype)


QWEN3_5_MOE = MoEAdapter(
    name="qwen3_5_moe",
    architectures=("Qwen3_5MoeForConditionalGeneration", "Qwen3_5MoeForCausalLM"),
    model_type="qwen3_5_moe",
    num_layers_key="num_hidden_layers",
    num_experts_key="num_experts",
    top_k_key="num_experts_per_tok",
    layers_path="model.layers",
    moe_attr="mlp",
    router_attr="gate",
    experts_attr="experts",
    expert_tensors=fused_expert_tensors(*_PREFIXES),
    router_tensors=tuple(ExpertTensor(f"{prefix}.gate.weight") for prefix in _PREFIXES),
    per_expert_tensors=per_expert_tensors(*_PREFIXES),
    router_output_to_topk=router_output_to_topk,
    logits_to_topk=_logits_to_topk,
    expert_forward=gated_expert_forward,
    config_section="text_config",
    text_model_types=("qwen3_5_moe_text",),
    mtp=("mtp.", "mtp_num_hidden_layers"),
)
