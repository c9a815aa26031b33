"""Pieces shared by the transformers-5 MoE families whose routers have no bias (Mixtral, Qwen3-MoE, OLMoE).

Router (transformers 5.x): logits = x W^T (N,E); softmax over ALL experts; top-k of the probabilities;
optionally renormalised over the k. It returns (logits (N,E), scores (N,k), indices (N,k)).
Experts: gate_up_proj (E, 2I, H) with gate = first half and up = second half of the 2I rows,
down_proj (E, H, I); f_j(x) = down_j (act(gate_j x) * up_j x), no biases.
"""

from __future__ import annotations

from typing import Any

import torch

from moeprint.adapters.base import ExpertTensor


def softmax_topk(
    logits: torch.Tensor, top_k: int, *, normalize: bool, out_dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(topk_ids (N,k), topk_weights (N,k)) from router logits (N,E), as the routers compute them.
    `out_dtype=None` keeps the float32 probabilities (Mixtral); otherwise they are cast (Qwen3-MoE, OLMoE)."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float)  # (N, E)
    top_values, top_ids = torch.topk(probs, top_k, dim=-1)  # (N, k)
    if normalize:
        top_values /= top_values.sum(dim=-1, keepdim=True)
    if out_dtype is not None:
        top_values = top_values.to(out_dtype)
    return top_ids, top_values


def router_output_to_topk(output: Any, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logits (N,E), scores (N,k), indices (N,k)) -> (ids, weights, logits)."""
    if len(output) != 3:
        raise TypeError(f"unexpected router output of length {len(output)} (transformers >= 5 returns 3 tensors)")
    logits, scores, indices = output
    return indices, scores, logits


def gated_expert_forward(experts: torch.nn.Module, hidden: torch.Tensor, expert: int) -> torch.Tensor:
    """f_j(x) for one expert, before the routing weight: (T,H) -> (T,H)."""
    gate, up = torch.nn.functional.linear(hidden, experts.gate_up_proj[expert]).chunk(2, dim=-1)  # (T, I) each
    return torch.nn.functional.linear(experts.act_fn(gate) * up, experts.down_proj[expert])  # (T, H)


def softmax_topk_in_logits_dtype(
    logits: torch.Tensor, top_k: int, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3-MoE / OLMoE routing: weights cast back to the logits' dtype; renormalised if `norm_topk_prob`."""
    return softmax_topk(logits, top_k, normalize=normalize, out_dtype=logits.dtype)


def fused_expert_tensors(*blocks: str) -> tuple[ExpertTensor, ...]:
    """`{block}.experts.gate_up_proj` / `.down_proj` (expert axis 0) under each MoE-block prefix (with `{layer}`)."""
    return tuple(ExpertTensor(f"{block}.experts.{proj}") for proj in ("gate_up_proj", "down_proj") for block in blocks)


def per_expert_tensors(
    *blocks: str, projs=("gate_proj", "up_proj", "down_proj"), suffixes=("weight",)
) -> tuple[str, ...]:
    """`{block}.experts.{expert}.{proj}.{suffix}` for each MoE-block prefix: the original one-tensor-per-expert names."""
    return tuple(
        f"{block}.experts.{{expert}}.{proj}.{suffix}" for block in blocks for proj in projs for suffix in suffixes
    )
