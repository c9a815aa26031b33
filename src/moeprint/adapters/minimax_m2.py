"""MiniMax-M2 (MiniMaxM2ForCausalLM): 62 layers x 256 experts, top-8, every layer MoE, no shared expert.

Router `mlp.gate` (no bias): logits = x W^T (N,E); scores = sigmoid(logits) in float32;
ids = top-k of scores + e_score_correction_bias (selection only; a buffer of the MoE block, `mlp.e_score_correction_bias`,
passed to the router as its second argument); weights = scores[ids] / their sum (float32).
It returns (logits (N,E), weights (N,k), ids (N,k)); the experts get (hidden, ids, weights).
On disk (hub, Mixtral's layout): `model.layers.{L}.block_sparse_moe.gate.weight (E,H)`,
`block_sparse_moe.e_score_correction_bias (E)` and per expert `block_sparse_moe.experts.{e}.w1|w3.weight (I,H)`
(gate, up), `w2.weight (H,I)` (FP8 checkpoints add `.weight_scale_inv` per tensor); transformers renames
`block_sparse_moe` to `mlp` and fuses the experts into `mlp.experts.gate_up_proj (E,2I,H)` / `down_proj (E,H,I)`
(both layouts declared).
"""

from __future__ import annotations

import torch

from moeprint.adapters.base import ExpertTensor, MoEAdapter, RouterBuffer
from moeprint.adapters.common import (
    fused_expert_tensors,
    gated_expert_forward,
    per_expert_tensors,
    router_output_to_topk,
)


def _logits_to_topk(
    logits: torch.Tensor, top_k: int, *, e_score_correction_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.sigmoid(logits.float())  # (N, E)
    ids = torch.topk(scores + e_score_correction_bias, top_k, dim=-1, sorted=False)[1]  # (N, k)
    weights = scores.gather(1, ids)  # (N, k)
    weights /= weights.sum(dim=-1, keepdim=True)
    return ids, weights


MINIMAX_M2 = MoEAdapter(
    name="minimax_m2",
    architectures=("MiniMaxM2ForCausalLM",),
    model_type="minimax_m2",
    num_layers_key="num_hidden_layers",
    num_experts_key="num_local_experts",
    top_k_key="num_experts_per_tok",
    layers_path="model.layers",
    moe_attr="mlp",
    router_attr="gate",
    experts_attr="experts",
    expert_tensors=fused_expert_tensors("model.layers.{layer}.mlp"),
    router_tensors=tuple(
        ExpertTensor(f"model.layers.{{layer}}.{block}.{name}")
        for block in ("block_sparse_moe", "mlp")
        for name in ("gate.weight", "e_score_correction_bias")
    ),
    per_expert_tensors=per_expert_tensors(
        "model.layers.{layer}.block_sparse_moe", projs=("w1", "w2", "w3"), suffixes=("weight", "weight_scale_inv")
    ),
    router_output_to_topk=router_output_to_topk,
    logits_to_topk=_logits_to_topk,
    router_buffers=(RouterBuffer("e_score_correction_bias", "e_score_correction_bias", on_block=True),),
    expert_forward=gated_expert_forward,
)
