"""Routing statistics from forward hooks on the routers, expert selection, and masked perplexity.

Everything goes through the adapter (no architecture names here). Experts are selected by the analyze
stage's criteria (same names, same ranking) and perplexity is scored with the evaluate stage's
next-token log-probabilities, so the testbed's fitness numbers mean what the pipeline's mean.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from moeprint.adapters import adapter_for
from moeprint.analyze.aggregate import LayerUsage
from moeprint.analyze.criteria import rank_experts
from moeprint.errors import MoeprintError
from moeprint.evaluate.text import next_token_logprobs

CRITERIA = ("frequency", "gate-mass")  # the analyze criteria that need neither norms nor a pooled usage


@dataclass
class RoutingStats:
    """Per layer: how often each expert is in the top-k (frequency) and its summed routing weight."""

    frequency: torch.Tensor  # (L, E) routed-slot counts
    gate_mass: torch.Tensor  # (L, E) summed top-k softmax weights
    tokens: int

    def shares(self) -> torch.Tensor:
        """(L, E) share of routed slots per expert (each layer sums to 1)."""
        return self.frequency / self.frequency.sum(dim=1, keepdim=True)

    def usage(self) -> LayerUsage:
        """The same sums as the analyze stage's usage record."""
        return LayerUsage.from_counts(
            self.frequency.numpy().astype(np.int64), self.gate_mass.numpy().astype(np.float64), self.tokens
        )


@contextlib.contextmanager
def record_routing(model) -> Iterator[RoutingStats]:
    """Accumulate RoutingStats over every forward pass inside the block."""
    adapter = adapter_for(model.config)
    blocks = adapter.moe_blocks(model)
    num_experts, top_k = adapter.num_experts(model.config), adapter.top_k(model.config)
    stats = RoutingStats(torch.zeros(len(blocks), num_experts), torch.zeros(len(blocks), num_experts), 0)

    def hook_for(row: int):
        def hook(module, inputs, output):
            ids, weights, _ = adapter.router_output_to_topk(output, top_k)  # (N, k), (N, k)
            stats.frequency[row] += torch.bincount(ids.flatten(), minlength=num_experts).float()
            stats.gate_mass[row].index_add_(0, ids.flatten(), weights.detach().flatten().float())
            if row == 0:
                stats.tokens += ids.shape[0]

        return hook

    handles = [adapter.router(block).register_forward_hook(hook_for(i)) for i, (_, block) in enumerate(blocks)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def windows(stream: torch.Tensor, seq_len: int, batch: int = 32) -> Iterator[torch.Tensor]:
    """Non-overlapping (B, seq_len + 1) windows of a 1-D token stream."""
    n = (len(stream) - 1) // seq_len
    if n == 0:
        raise MoeprintError(f"text of {len(stream)} tokens is shorter than one {seq_len + 1}-token window.")
    for i in range(0, n, batch):
        yield torch.stack([stream[j * seq_len : j * seq_len + seq_len + 1] for j in range(i, min(n, i + batch))])


@torch.no_grad()
def routing_stats(model, stream: torch.Tensor, seq_len: int = 128) -> RoutingStats:
    with record_routing(model) as stats:
        for rows in windows(stream, seq_len):
            model(input_ids=rows[:, :-1])
    return stats


def expert_token_shares(model, streams: Sequence[torch.Tensor], seq_len: int = 128) -> torch.Tensor:
    """(L, E) share of routed slots per expert over all `streams` together."""
    total = None
    for s in streams:
        f = routing_stats(model, s, seq_len).frequency
        total = f if total is None else total + f
    return total / total.sum(dim=1, keepdim=True)


def select_experts(stats: RoutingStats, n: int, criterion: str = "gate-mass") -> list[list[int]]:
    """The `n` best experts per layer under an analyze criterion (ties to the lower index), sorted."""
    if criterion not in CRITERIA:
        raise MoeprintError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}.")
    return [sorted(ranking[:n]) for ranking in rank_experts(stats.usage(), criterion)]


@torch.no_grad()
def perplexity(model, stream: torch.Tensor, seq_len: int = 128) -> float:
    """exp(mean next-token NLL) over non-overlapping windows."""
    total, count = 0.0, 0
    for rows in windows(stream, seq_len):
        inputs, targets = rows[:, :-1], rows[:, 1:]  # (B, T) each
        logprobs = next_token_logprobs(model, inputs, torch.ones_like(inputs))  # (B, T, V)
        total -= float(logprobs.gather(-1, targets[..., None]).sum(dtype=torch.float64))
        count += targets.numel()
    return math.exp(total / count)


def masked_perplexity(model, stream: torch.Tensor, kept: Sequence[Sequence[int]], seq_len: int = 128) -> float:
    """Perplexity with only `kept` experts routable in each layer (== the pruned model)."""
    with adapter_for(model.config).router_mask(model, kept):
        return perplexity(model, stream, seq_len)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-layer total-variation distance between two (L, E) share matrices: (L,)."""
    return 0.5 * (p - q).abs().sum(dim=1)


def top_overlap(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    """Mean over layers of |a_l & b_l| / |a_l|."""
    return sum(len(set(x) & set(y)) / len(x) for x, y in zip(a, b)) / len(a)
