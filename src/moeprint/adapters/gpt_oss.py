"""gpt-oss (GptOssForCausalLM): 24 x 32 experts top-4 (20b), 36 x 128 top-4 (120b).

Router (transformers 5.x): logits = x W^T + b (N,E); top-k of the logits; softmax over those k only.
transformers 4.55 returned (scores scattered to (N,E), indices (N,k)) instead of (logits, scores, indices).
With the MXFP4 GPU kernels, Mxfp4GptOssMLP calls the router weights directly and returns
(out, router_logits): routing is then recomputed from the logits with the same top-k + softmax.
Experts: gate_up_proj (E,H,2I) with gate/up interleaved on the last axis, down_proj (E,I,H), biases;
on disk in MXFP4 as *_blocks (E, rows, in/32, 16) and *_scales (E, rows, in/32), expert axis 0.
"""

from __future__ import annotations

from typing import Any

import torch

from moeprint.adapters.base import ExpertTensor, MoEAdapter
from moeprint.adapters.descriptors import KnownCheckpoint
from moeprint.adapters.harmony import HARMONY
from moeprint.adapters.mxfp4 import mxfp4_layout


def _logits_to_topk(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    top_values, top_ids = torch.topk(logits, top_k, dim=-1)  # (N, k)
    weights = torch.softmax(top_values, dim=-1, dtype=top_values.dtype)  # (N, k)
    return top_ids, weights


def _router_output_to_topk(output: Any, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if len(output) == 3:  # transformers >= 5: (logits (N,E), scores (N,k), indices (N,k))
        logits, scores, indices = output
        return indices, scores, logits
    if len(output) == 2:  # transformers 4.55: (scores scattered to (N,E), indices (N,k))
        dense_scores, indices = output
        return indices, torch.gather(dense_scores, 1, indices), None
    raise TypeError(f"unexpected gpt-oss router output of length {len(output)}")


def _expert_forward(experts: torch.nn.Module, hidden: torch.Tensor, expert: int) -> torch.Tensor:
    """f_j(x) for one expert, before the routing weight: (T,H) -> (T,H)."""
    gate_up = hidden @ experts.gate_up_proj[expert] + experts.gate_up_proj_bias[expert]  # (T, 2I)
    gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate = gate.clamp(max=experts.limit)
    up = up.clamp(min=-experts.limit, max=experts.limit)
    glu = gate * torch.sigmoid(gate * experts.alpha)
    return ((up + 1) * glu) @ experts.down_proj[expert] + experts.down_proj_bias[expert]  # (T, H)


GPT_OSS = MoEAdapter(
    name="gpt_oss",
    architectures=("GptOssForCausalLM",),
    model_type="gpt_oss",
    num_layers_key="num_hidden_layers",
    num_experts_key="num_local_experts",
    top_k_key="num_experts_per_tok",  # `experts_per_token` is NOT an alias in transformers 5
    layers_path="model.layers",
    moe_attr="mlp",
    router_attr="router",
    experts_attr="experts",
    expert_tensors=(
        ExpertTensor("model.layers.{layer}.mlp.experts.gate_up_proj"),
        ExpertTensor("model.layers.{layer}.mlp.experts.gate_up_proj_bias"),
        ExpertTensor("model.layers.{layer}.mlp.experts.down_proj"),
        ExpertTensor("model.layers.{layer}.mlp.experts.down_proj_bias"),
    ),
    router_tensors=(
        ExpertTensor("model.layers.{layer}.mlp.router.weight"),
        ExpertTensor("model.layers.{layer}.mlp.router.bias"),
    ),
    router_output_to_topk=_router_output_to_topk,
    logits_to_topk=_logits_to_topk,
    expert_forward=_expert_forward,
    fused_moe_classes=("Mxfp4GptOssMLP",),
    # as the published config writes it: attention, router, embeddings and head stay in bf16
    quantisation=mxfp4_layout(
        ("model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head")
    ),
    chat_format=HARMONY,
    checkpoints=(
        # the public "GPT-OSS MoE Expert Fingerprinting" project recorded its routing on the 20b
        KnownCheckpoint("openai/gpt-oss-20b", 24, 32, 4, published_routing=("expert-fingerprinting",)),
        KnownCheckpoint("openai/gpt-oss-120b", 36, 128, 4),
    ),
)
