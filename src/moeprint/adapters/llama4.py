"""Llama-4 (Llama4ForConditionalGeneration on the hub, Llama4ForCausalLM for the text model): Scout 48 layers x 16
experts, Maverick 48 layers (every second MoE) x 128 experts; top-1; a shared expert in every MoE layer.

Router `feed_forward.router` (an nn.Linear, no bias): logits = x W^T (N,E); the top-k logits, sigmoid in
float32, scattered into (N,E) with sigmoid(-inf) = 0 elsewhere: it returns (scores (N,E), logits (N,E)), not the
standard form. The MoE block then runs EVERY expert on every token's input scaled by its score
(`experts(x * score)`, a batched matmul over E) and sums over experts: an expert's weight scales its input, not its
output, and a dropped expert (score 0) adds exactly 0. Recorded weights are the scores of the chosen experts; the
expert norm is ||f_j(x)|| of the unscaled input.
MoE layers: `moe_layers` (from `interleave_moe_layer_step`). Config under `text_config`: `num_local_experts`,
`num_experts_per_tok`; AutoModelForCausalLM loads the text model alone (`llama4_text`, naming no architecture).
On disk, fused: `language_model.model.layers.{L}.feed_forward.experts.gate_up_proj (E,H,2I)` (gate | up halves
of the last axis), `experts.down_proj (E,I,H)`, `feed_forward.router.weight (E,H)`.
"""

from __future__ import annotations

from typing import Any

import torch

from moeprint.adapters.base import ExpertTensor, MoEAdapter, config_get
from moeprint.adapters.common import fused_expert_tensors

_PREFIXES = ("language_model.model.layers.{layer}.feed_forward", "model.layers.{layer}.feed_forward")


def _scores(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's (scores (N,E), chosen ids (N,k)) from its logits, in its order of operations."""
    top_values, ids = torch.topk(logits, top_k, dim=1)  # (N, k)
    scores = torch.full_like(logits, float("-inf")).scatter_(1, ids, top_values)  # (N, E)
    return torch.sigmoid(scores.float()).to(scores.dtype), ids


def _logits_to_topk(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    scores, ids = _scores(logits, top_k)
    return ids, scores.gather(1, ids)


def _router_output_to_topk(output: Any, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if len(output) != 2:
        raise TypeError(f"unexpected Llama-4 router output of length {len(output)} (expected scores, logits)")
    scores, logits = output  # (N, E), (N, E)
    ids = torch.topk(logits, top_k, dim=1)[1]  # (N, k): as the router chose (masked logits are -inf)
    return ids, scores.gather(1, ids), logits


def _masked_router_output(logits_kept: torch.Tensor, top_k: int, keep_ids: torch.Tensor, n_total: int):
    """(scores (N,E), logits (N,E)) of the base router with only the kept experts: the pruned router's scores over
    the kept columns (so each value is computed as the pruned model computes it), 0 and -inf elsewhere."""
    scores_kept, _ = _scores(logits_kept, top_k)  # (N, n)
    scores = scores_kept.new_zeros((logits_kept.shape[0], n_total))
    scores[:, keep_ids] = scores_kept
    logits = logits_kept.new_full((logits_kept.shape[0], n_total), float("-inf"))
    logits[:, keep_ids] = logits_kept
    return scores, logits


def _expert_forward(experts: torch.nn.Module, hidden: torch.Tensor, expert: int) -> torch.Tensor:
    """f_j(x) for one expert on the unscaled input: (T,H) -> (T,H)."""
    gate, up = (hidden @ experts.gate_up_proj[expert]).chunk(2, dim=-1)  # (T, I) each
    return (up * experts.act_fn(gate)) @ experts.down_proj[expert]  # (T, H)


def _is_moe_layer(config: Any, layer: int) -> bool:
    moe_layers = config_get(config, "moe_layers")
    if moe_layers is not None:
        return layer in moe_layers
    step = int(config_get(config, "interleave_moe_layer_step", 1))
    return (layer + 1) % step == 0  # transformers' default list: step-1, 2*step-1, ...


LLAMA4 = MoEAdapter(
    name="llama4",
    architectures=("Llama4ForConditionalGeneration", "Llama4ForCausalLM"),
    model_type="llama4",
    num_layers_key="num_hidden_layers",
    num_experts_key="num_local_experts",
    top_k_key="num_experts_per_tok",
    layers_path="model.layers",
    moe_attr="feed_forward",
    router_attr="router",
    experts_attr="experts",
    expert_tensors=fused_expert_tensors(*_PREFIXES),
    router_tensors=tuple(ExpertTensor(f"{prefix}.router.weight") for prefix in _PREFIXES),
    router_output_to_topk=_router_output_to_topk,
    logits_to_topk=_logits_to_topk,
    masked_router_output=_masked_router_output,
    expert_forward=_expert_forward,
    is_moe_layer=_is_moe_layer,
    config_section="text_config",
    text_model_types=("llama4_text",),
)
