"""Fingerprints as mergeable sums and counts, accumulated from routing arrays with np.bincount.

Everything here is pure: arrays in, arrays out. A routing decision is one (token, layer, choice j)
entry of `ids (T, L, k)`. Each decision lands in one bin of a flat (group, layer, expert) index,
so one `np.bincount` over the flattened index counts a whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moeprint.errors import MoeprintError


@dataclass(frozen=True)
class LayerUsage:
    """Per-(layer, expert) sums of one selection of tokens (a domain and segments). Arrays are (L, E).

    `n_tokens` is how many tokens were routed in each layer (every token is routed in every layer).
    `norm_sum` / `weight_norm_sum` are None when the run recorded no expert output norms.
    `per_layer` holds the routed tokens of each layer where they are known per layer (fingerprints files,
    published summaries, whose reconstructed counts are not integers); `layer_tokens` reads either.
    """

    tokens: np.ndarray  # (L, E) int64: tokens that picked the expert
    weight_sum: np.ndarray  # (L, E) float64: sum of routing weights
    n_tokens: int
    weight_max: np.ndarray | None = None  # (L, E) float32
    norm_sum: np.ndarray | None = None  # (L, E) float64: sum of ||f_e(x)|| over routed tokens
    weight_norm_sum: np.ndarray | None = None  # (L, E) float64: sum of w_e(x) * ||f_e(x)||
    per_layer: np.ndarray | None = None  # (L,) routed tokens per layer

    @property
    def layer_tokens(self) -> np.ndarray:
        """(L,) routed tokens per layer."""
        if self.per_layer is not None:
            return self.per_layer
        return np.full(self.num_layers, self.n_tokens, dtype=np.int64)

    @property
    def num_layers(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_experts(self) -> int:
        return self.tokens.shape[1]

    @classmethod
    def from_counts(
        cls,
        tokens: np.ndarray,
        weight_sum: np.ndarray | None = None,
        n_tokens: int | None = None,
        norm_sum: np.ndarray | None = None,
        weight_norm_sum: np.ndarray | None = None,
    ) -> LayerUsage:
        """Build from plain (L, E) arrays (e.g. in the sweep stage). weight_sum defaults to the counts;
        n_tokens (informational, no criterion uses it) defaults to the largest per-layer decision count."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2:
            raise MoeprintError(f"usage arrays must be (layers, experts); got shape {tokens.shape}.")
        ws = np.asarray(weight_sum, dtype=np.float64) if weight_sum is not None else tokens.astype(np.float64)
        n = int(n_tokens) if n_tokens is not None else int(tokens.sum(axis=1).max(initial=0))
        return cls(
            tokens,
            ws,
            n,
            None,
            None if norm_sum is None else np.asarray(norm_sum, np.float64),
            None if weight_norm_sum is None else np.asarray(weight_norm_sum, np.float64),
        )


@dataclass
class UsageSums:
    """Sums per (domain, segment, layer, expert) plus co-activation counts; merge by adding."""

    domains: tuple[str, ...]
    segments: tuple[str, ...]
    num_layers: int
    num_experts: int
    top_k: int
    with_norms: bool = False
    with_coactivation: bool = True
    tokens: np.ndarray = field(init=False)  # (D, S, L, E) int64
    weight_sum: np.ndarray = field(init=False)  # (D, S, L, E) float64
    weight_max: np.ndarray = field(init=False)  # (D, S, L, E) float32
    norm_sum: np.ndarray | None = field(init=False)
    weight_norm_sum: np.ndarray | None = field(init=False)
    layer_tokens: np.ndarray = field(init=False)  # (D, S) int64: tokens per layer
    coactivation: np.ndarray | None = field(init=False)  # (D, S, L, E, E) int64, upper triangle a < b

    def __post_init__(self) -> None:
        shape = (len(self.domains), len(self.segments), self.num_layers, self.num_experts)
        self.tokens = np.zeros(shape, np.int64)
        self.weight_sum = np.zeros(shape, np.float64)
        self.weight_max = np.zeros(shape, np.float32)
        self.norm_sum = np.zeros(shape, np.float64) if self.with_norms else None
        self.weight_norm_sum = np.zeros(shape, np.float64) if self.with_norms else None
        self.layer_tokens = np.zeros(shape[:2], np.int64)
        self.coactivation = np.zeros(shape + (self.num_experts,), np.int64) if self.with_coactivation else None

    @property
    def n_bins(self) -> int:
        return self.tokens.size

    def add_batch(
        self, group: np.ndarray, ids: np.ndarray, weights: np.ndarray, norms: np.ndarray | None = None
    ) -> None:
        """Add T tokens. group (T,) = domain_index * S + segment_index; ids, weights, norms (T, L, k)."""
        t, n_layers, k = ids.shape
        n_experts = self.num_experts
        if n_layers != self.num_layers:
            raise MoeprintError(f"routing rows have {n_layers} layers, the run says {self.num_layers}.")
        if t == 0:
            return
        group = group.astype(np.intp, copy=False)
        # flat bin of each decision: (group * L + layer) * E + expert
        row_base = group * (n_layers * n_experts)  # (T,)
        layer_base = np.arange(n_layers, dtype=np.intp) * n_experts  # (L,)
        idx = ids.astype(np.intp)  # (T, L, k)
        idx += layer_base[None, :, None]
        idx += row_base[:, None, None]
        flat = idx.reshape(-1)  # (T*L*k,)
        w = weights.reshape(-1)
        self.tokens.reshape(-1)[:] += np.bincount(flat, minlength=self.n_bins)
        self.weight_sum.reshape(-1)[:] += np.bincount(flat, weights=w, minlength=self.n_bins)
        np.maximum.at(self.weight_max.reshape(-1), flat, w.astype(np.float32, copy=False))
        if self.with_norms:
            if norms is None:
                raise MoeprintError("this fingerprint expects expert norms but the batch has none.")
            nv = norms.reshape(-1)
            self.norm_sum.reshape(-1)[:] += np.bincount(flat, weights=nv, minlength=self.n_bins)
            self.weight_norm_sum.reshape(-1)[:] += np.bincount(flat, weights=nv * w, minlength=self.n_bins)
        self.layer_tokens.reshape(-1)[:] += np.bincount(group, minlength=self.layer_tokens.size)
        if self.with_coactivation:
            # pair bin: ((group * L + layer) * E + lower) * E + higher, for every j1 < j2 of a token's choices
            pair_base = (row_base[:, None] + layer_base[None, :]) * n_experts  # (T, L)
            lo_hi = np.sort(ids, axis=-1).astype(np.intp)  # (T, L, k) ascending: lower id first
            pair_bins = [
                pair_base + lo_hi[:, :, a] * n_experts + lo_hi[:, :, b] for a in range(k) for b in range(a + 1, k)
            ]
            self.coactivation.reshape(-1)[:] += np.bincount(
                np.concatenate([p.reshape(-1) for p in pair_bins]), minlength=self.coactivation.size
            )

    def merge(self, other: UsageSums) -> UsageSums:
        """Add another accumulator of the same shape (shards, machines)."""
        if (other.domains, other.segments, other.tokens.shape) != (self.domains, self.segments, self.tokens.shape):
            raise MoeprintError("cannot merge fingerprints with different domains, segments or shapes.")
        self.tokens += other.tokens
        self.weight_sum += other.weight_sum
        np.maximum(self.weight_max, other.weight_max, out=self.weight_max)
        if self.with_norms and other.with_norms:
            self.norm_sum += other.norm_sum
            self.weight_norm_sum += other.weight_norm_sum
        self.layer_tokens += other.layer_tokens
        if self.with_coactivation and other.with_coactivation:
            self.coactivation += other.coactivation
        return self

    def select(self, domains: list[str] | None = None, segments: list[str] | None = None) -> LayerUsage:
        """Pool the chosen domains (None = all) and segments (None = all) into one LayerUsage."""
        d = self._indices(self.domains, domains)
        s = self._indices(self.segments, segments)
        sub = np.ix_(d, s)

        def pool(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[sub].sum(axis=(0, 1))

        wmax = (
            self.weight_max[sub].max(axis=(0, 1)) if len(d) and len(s) else np.zeros(self.tokens.shape[2:], np.float32)
        )
        return LayerUsage(
            pool(self.tokens),
            pool(self.weight_sum),
            int(self.layer_tokens[sub].sum()),
            wmax,
            pool(self.norm_sum),
            pool(self.weight_norm_sum),
        )

    def select_coactivation(
        self, domains: list[str] | None = None, segments: list[str] | None = None
    ) -> np.ndarray | None:
        if self.coactivation is None:
            return None
        sub = np.ix_(self._indices(self.domains, domains), self._indices(self.segments, segments))
        return self.coactivation[sub].sum(axis=(0, 1))  # (L, E, E)

    @staticmethod
    def _indices(names: tuple[str, ...], chosen: list[str] | None) -> list[int]:
        if chosen is None:
            return list(range(len(names)))
        return [names.index(c) for c in chosen if c in names]


@dataclass
class PromptCounts:
    """Per-prompt expert counts (P, L, E) of the selected segments: the unit for resampling and classifiers.

    Grows as new prompts appear while streaming; rows are prompts in order of first sight.
    """

    num_layers: int
    num_experts: int
    prompt_ids: list[str] = field(default_factory=list)
    prompt_domains: list[str] = field(default_factory=list)
    counts: np.ndarray = field(default=None)  # (P, L, E) int32
    n_tokens: np.ndarray = field(default=None)  # (P,) int64

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros((0, self.num_layers, self.num_experts), np.int32)
            self.n_tokens = np.zeros(0, np.int64)
        self._row = {p: i for i, p in enumerate(self.prompt_ids)}

    def rows_for(self, keys: list[str], domains: list[str]) -> np.ndarray:
        """Row index of each key, appending unseen prompts (with their domain)."""
        for key, domain in zip(keys, domains):
            if key not in self._row:
                self._row[key] = len(self.prompt_ids)
                self.prompt_ids.append(key)
                self.prompt_domains.append(domain)
        n = len(self.prompt_ids)
        if n > len(self.counts):  # amortised growth
            cap = max(n, 2 * len(self.counts), 64)
            grown = np.zeros((cap, self.num_layers, self.num_experts), np.int32)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
            n_tok = np.zeros(cap, np.int64)
            n_tok[: len(self.n_tokens)] = self.n_tokens
            self.n_tokens = n_tok
        return np.array([self._row[k] for k in keys], dtype=np.intp)

    def add_batch(self, prompt_index: np.ndarray, ids: np.ndarray) -> None:
        """prompt_index (T,) rows from rows_for, ids (T, L, k)."""
        if len(prompt_index) == 0:
            return
        # a batch holds few prompts: count into local bins, then add those rows
        present, local = np.unique(prompt_index, return_inverse=True)
        le = self.num_layers * self.num_experts
        idx = ids.astype(np.intp)
        idx += (np.arange(self.num_layers, dtype=np.intp) * self.num_experts)[None, :, None]
        idx += (local.astype(np.intp) * le)[:, None, None]
        local_counts = np.bincount(idx.reshape(-1), minlength=len(present) * le)
        self.counts[present] += local_counts.reshape(len(present), self.num_layers, self.num_experts).astype(np.int32)
        self.n_tokens[present] += np.bincount(local, minlength=len(present))

    def finish(self) -> PromptCounts:
        """Trim the growth capacity."""
        n = len(self.prompt_ids)
        self.counts, self.n_tokens = self.counts[:n], self.n_tokens[:n]
        return self


def count_usage(ids: np.ndarray, num_experts: int) -> np.ndarray:
    """Expert counts (L, E) of routing ids (T, L, k): the smallest building block, for callers with arrays."""
    t, n_layers, _ = ids.shape
    idx = ids.astype(np.intp) + (np.arange(n_layers, dtype=np.intp) * num_experts)[None, :, None]
    return np.bincount(idx.reshape(-1), minlength=n_layers * num_experts).reshape(n_layers, num_experts)
