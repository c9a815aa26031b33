"""Held-out text metrics of a cut against its base: perplexity per domain, mean token KL(base || cut),
top-1 next-token agreement.

Texts are tokenized without special tokens and cut into windows of at most `max_tokens`; in each window
token t+1 is predicted from tokens 0..t (the first token of a window is context only). Windows are
batched with right padding, which leaves every real position's logits unchanged (causal attention).
The base side is computed once (`BaseReference`) and reused for every cut of a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from moeprint.evaluate.cut import Cut
from moeprint.evaluate.inputs import EvalText
from moeprint.io.loader import check_context, context_length, input_device


@dataclass(frozen=True)
class Window:
    domain: str
    text_id: str
    ids: tuple[int, ...]


def make_windows(texts: Iterable[EvalText], tokenizer, max_tokens: int = 256, model=None) -> list[Window]:
    """Token windows of every text (windows shorter than 2 tokens predict nothing and are dropped).
    With `model`, a window longer than its context (`max_position_embeddings`) is one clear error."""
    if model is not None:
        check_context(max_tokens, context_length(model), "--max-tokens")
    out = []
    for t in texts:
        ids = tokenizer(t.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), max_tokens):
            chunk = ids[start : start + max_tokens]
            if len(chunk) >= 2:
                out.append(Window(t.domain, t.text_id, tuple(chunk)))
    return out


def batches(windows: list[Window], batch_tokens: int) -> list[list[int]]:
    """Window indices grouped so a batch holds about `batch_tokens` padded tokens (longest first)."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    groups, current, width = [], [], 0
    for i in order:
        width = max(width, len(windows[i].ids)) if current else len(windows[i].ids)
        if current and width * (len(current) + 1) > batch_tokens:
            groups.append(current)
            current, width = [], len(windows[i].ids)
        current.append(i)
    if current:
        groups.append(current)
    return groups


def padded(windows: list[Window], idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(windows[i].ids) for i in idx)
    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # (B, S)
    attention = torch.zeros((len(idx), width), dtype=torch.long)  # (B, S)
    for row, i in enumerate(idx):
        n = len(windows[i].ids)
        input_ids[row, :n] = torch.tensor(windows[i].ids)
        attention[row, :n] = 1
    return input_ids, attention


@torch.no_grad()
def next_token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position, float32 on the CPU (where the references live): (B, S, V)."""
    device = input_device(model)
    logits = model(
        input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False
    ).logits  # (B, S, V)
    return torch.log_softmax(logits.float(), dim=-1).cpu()


@dataclass
class BaseReference:
    """The base model's side of every window: per-token NLL and argmax, and (if they fit in
    `cache_bytes`) the full next-token log-distributions needed for KL."""

    windows: list[Window]
    groups: list[list[int]]
    pad_id: int
    nll: list[torch.Tensor] = field(default_factory=list)  # per window (n-1,)
    argmax: list[torch.Tensor] = field(default_factory=list)  # per window (n-1,)
    logprobs: dict[int, torch.Tensor] | None = None  # group index -> (B, S-1, V), or None if not cached
    spill: Any = None  # the temp folder holding log-probs past the memory cap (removed with the reference)


def _targets(input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    targets = input_ids[:, 1:]  # (B, S-1)
    valid = (attention[:, 1:] * attention[:, :-1]).bool()  # (B, S-1)
    return targets, valid


def build_reference(
    base: Cut,
    windows: list[Window],
    pad_id: int,
    batch_tokens: int = 4096,
    cache_bytes: int = 1 << 29,
    progress=None,
    keep_all: bool = False,
) -> BaseReference:
    """`keep_all`: keep every group's log-probs, those past `cache_bytes` in a temp file (memory-mapped
    when read back), so that the cut is scored without the base model loaded."""
    groups = batches(windows, batch_tokens)
    ref = BaseReference(windows, groups, pad_id, [None] * len(windows), [None] * len(windows), {})
    used = 0
    with base.active():
        for g, idx in enumerate(groups):
            input_ids, attention = padded(windows, idx, pad_id)
            lp = next_token_logprobs(base.model, input_ids, attention)[:, :-1]  # (B, S-1, V)
            targets, valid = _targets(input_ids, attention)
            nll = -lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S-1)
            top1 = lp.argmax(-1)  # (B, S-1)
            for row, i in enumerate(idx):
                ref.nll[i] = nll[row][valid[row]]
                ref.argmax[i] = top1[row][valid[row]]
            if ref.logprobs is not None and used + lp.numel() * 4 <= cache_bytes:
                ref.logprobs[g] = lp
                used += lp.numel() * 4
            elif keep_all:
                ref.logprobs[g] = _spilled(ref, g, lp)
            else:
                ref.logprobs = None  # too big: KL recomputes the base side batch by batch
            if progress:
                progress()
    return ref


def _spilled(ref: BaseReference, g: int, lp: torch.Tensor) -> torch.Tensor:
    """`lp` written raw to the reference's temp folder and mapped back (copy-on-write: no RAM until read)."""
    import tempfile

    import numpy as np

    if ref.spill is None:
        ref.spill = tempfile.TemporaryDirectory(prefix="moeprint-logprobs-")
    path = f"{ref.spill.name}/{g}.npy"
    np.save(path, lp.numpy())
    return torch.from_numpy(np.load(path, mmap_mode="c"))  # (B, S-1, V)


def kl_base_to_cut(base_lp: torch.Tensor, cut_lp: torch.Tensor) -> torch.Tensor:
    """KL(base || cut) per position: sum_v p_base (log p_base - log p_cut). (..., V) -> (...)"""
    return (base_lp.exp() * (base_lp - cut_lp)).sum(-1)


@dataclass
class DomainTotals:
    """Sums over a domain's predicted tokens (mergeable; means are taken at the end)."""

    n_tokens: int = 0
    nll_base: float = 0.0
    nll_cut: float = 0.0
    kl: float = 0.0
    agree: int = 0

    def add(self, other: DomainTotals) -> None:
        self.n_tokens += other.n_tokens
        self.nll_base += other.nll_base
        self.nll_cut += other.nll_cut
        self.kl += other.kl
        self.agree += other.agree

    def summary(self) -> dict[str, float | int]:
        n = max(self.n_tokens, 1)
        ppl_base, ppl_cut = math.exp(self.nll_base / n), math.exp(self.nll_cut / n)
        return {
            "n_tokens": self.n_tokens,
            "ppl_base": ppl_base,
            "ppl_cut": ppl_cut,
            "ppl_ratio": ppl_cut / ppl_base,  # 1 = unchanged; >1 = worse
            "retention": ppl_base / ppl_cut,  # 1 = unchanged; <1 = worse
            "kl": self.kl / n,  # mean token KL(base || cut), nats
            "top1_agreement": self.agree / n,
        }


@torch.no_grad()
def compare_texts(
    ref: BaseReference, cut: Cut, base_model: torch.nn.Module | None = None, progress=None
) -> dict[str, DomainTotals]:
    """Per-domain sums for one cut. `base_model` is needed only if the base log-probs were not cached."""
    totals: dict[str, DomainTotals] = {}
    for g, idx in enumerate(ref.groups):
        input_ids, attention = padded(ref.windows, idx, ref.pad_id)
        with cut.active():
            cut_lp = next_token_logprobs(cut.model, input_ids, attention)[:, :-1]  # (B, S-1, V)
        if ref.logprobs is not None:
            base_lp = ref.logprobs[g]
        else:
            if base_model is None:
                raise ValueError("base log-probs were not cached; pass base_model")
            base_lp = next_token_logprobs(base_model, input_ids, attention)[:, :-1]
        targets, valid = _targets(input_ids, attention)
        nll_cut = -cut_lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, S-1)
        kl = kl_base_to_cut(base_lp, cut_lp)  # (B, S-1)
        top1 = cut_lp.argmax(-1)  # (B, S-1)
        for row, i in enumerate(idx):
            v = valid[row]
            w = ref.windows[i]
            t = totals.setdefault(w.domain, DomainTotals())
            t.n_tokens += int(v.sum())
            t.nll_base += float(ref.nll[i].double().sum())
            t.nll_cut += float(nll_cut[row][v].double().sum())
            t.kl += float(kl[row][v].double().sum())
            t.agree += int((top1[row][v] == ref.argmax[i]).sum())
        if progress:
            progress()
    return totals


def summarise(totals: dict[str, DomainTotals], in_domain: str | None) -> dict[str, dict]:
    """`per_domain`, plus pooled `all`, `in_domain` (the cut's own domain) and `off_domain` (every other)."""
    out = {"per_domain": {d: t.summary() for d, t in sorted(totals.items())}}
    pooled = {"all": DomainTotals(), "in_domain": DomainTotals(), "off_domain": DomainTotals()}
    for d, t in totals.items():
        pooled["all"].add(t)
        if in_domain:
            pooled["in_domain" if d == in_domain else "off_domain"].add(t)
    for key, t in pooled.items():
        out[key] = t.summary() if t.n_tokens else None  # None: no such texts (or the cut has no domain)
    return out
