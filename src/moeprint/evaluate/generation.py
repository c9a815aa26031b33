"""Generation health of a cut (does it still finish, does it loop?) and its use as a speculative-
decoding draft for its base (transformers assisted generation).

Looping, defined: a generation loops if some span of it is one unit of p <= `max_period` tokens
repeated back to back, the span being at least `min_span` tokens long and holding at least three
copies of the unit (e.g. 12 identical tokens, or a 5-token phrase said three times in a row).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from moeprint.evaluate.cut import Cut
from moeprint.evaluate.inputs import prompt_words
from moeprint.io.loader import check_context, context_length, input_device
from moeprint.prompts import render_prompt
from moeprint.types import PromptRecord

MAX_PERIOD = 16
MIN_SPAN = 12


def longest_loop(tokens: list[int], max_period: int = MAX_PERIOD) -> tuple[int, int]:
    """(span length, period) of the longest back-to-back repetition of a unit of <= max_period tokens
    with at least three copies; (0, 0) if none. O(len * max_period)."""
    best = (0, 0)
    n = len(tokens)
    for p in range(1, max_period + 1):
        run = 0  # consecutive positions j with tokens[j] == tokens[j - p]
        for j in range(p, n + 1):
            if j < n and tokens[j] == tokens[j - p]:
                run += 1
                continue
            span = run + p
            if run > 0 and span >= 3 * p and span > best[0]:
                best = (span, p)
            run = 0
    return best


def is_looping(tokens: list[int], min_span: int = MIN_SPAN, max_period: int = MAX_PERIOD) -> bool:
    return longest_loop(tokens, max_period)[0] >= min_span


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


@dataclass(frozen=True)
class Generated:
    prompt: PromptRecord
    token_ids: tuple[int, ...]  # generated tokens, EOS included if produced
    text: str
    finished: bool  # produced EOS before the cap
    loop_span: int


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate(
    cut: Cut, prompts: list[PromptRecord], tokenizer, max_new_tokens: int = 64, batch_size: int = 8, progress=None
) -> list[Generated]:
    """Greedy generation with left padding; `finished` means EOS came before `max_new_tokens`."""
    from transformers import GenerationConfig

    eos = _eos_ids(cut.model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(eos), pad_token_id=tokenizer.pad_token_id
    )
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        with cut.active(), _quiet_transformers():
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(
                    [render_prompt(tokenizer, p) for p in chunk],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                )
                check_context(
                    enc["input_ids"].shape[1] + max_new_tokens,
                    context_length(cut.model),
                    f"a generation prompt of {chunk[0].domain!r} plus --max-new-tokens",
                )
                seqs = cut.model.generate(
                    **enc.to(input_device(cut.model)), generation_config=config
                ).cpu()  # (B, S + new)
                for p, row in zip(chunk, seqs[:, enc["input_ids"].shape[1] :].tolist()):
                    ends = [i for i, t in enumerate(row) if t in eos]
                    kept = row[: ends[0] + 1] if ends else row
                    body = kept[:-1] if ends else kept
                    out.append(Generated(p, tuple(kept), tokenizer.decode(body), bool(ends), longest_loop(body)[0]))
                if progress:
                    progress(len(chunk))
    finally:
        tokenizer.padding_side = side
    return out


def health_table(
    base: list[Generated],
    cut: list[Generated],
    in_domain: str | None,
    min_span: int = MIN_SPAN,
    samples_per_domain: int = 3,
) -> dict[str, Any]:
    def summary(pairs):
        if not pairs:
            return None
        n = len(pairs)
        return {
            "n": n,
            "finished_rate_base": sum(b.finished for b, _ in pairs) / n,
            "finished_rate_cut": sum(c.finished for _, c in pairs) / n,
            "looping_rate_base": sum(b.loop_span >= min_span for b, _ in pairs) / n,
            "looping_rate_cut": sum(c.loop_span >= min_span for _, c in pairs) / n,
            "mean_tokens_base": sum(len(b.token_ids) for b, _ in pairs) / n,
            "mean_tokens_cut": sum(len(c.token_ids) for _, c in pairs) / n,
        }

    pairs = list(zip(base, cut))
    domains = sorted({b.prompt.domain for b in base})
    samples = []
    for d in domains:
        for b, c in [p for p in pairs if p[0].prompt.domain == d][:samples_per_domain]:
            samples.append(
                {
                    "id": b.prompt.prompt_id,
                    "domain": d,
                    "prompt": prompt_words(b.prompt),
                    "base": b.text,
                    "cut": c.text,
                    "finished_base": b.finished,
                    "finished_cut": c.finished,
                    "looping_base": b.loop_span >= min_span,
                    "looping_cut": c.loop_span >= min_span,
                }
            )
    return {
        "per_domain": {d: summary([p for p in pairs if p[0].prompt.domain == d]) for d in domains},
        "all": summary(pairs),
        "in_domain": summary([p for p in pairs if in_domain and p[0].prompt.domain == in_domain]),
        "off_domain": summary([p for p in pairs if in_domain and p[0].prompt.domain != in_domain]),
        "samples": samples,
    }


@dataclass
class SpecCounts:
    """Assisted generation bookkeeping, counted from the base model's forward calls: each base forward
    verifies the draft's candidates (its input beyond the one token the base itself chose last time)
    and yields the accepted ones plus one token of its own."""

    new_tokens: int = 0
    base_forwards: int = 0
    drafted: int = 0

    @property
    def accepted(self) -> int:
        return max(self.new_tokens - self.base_forwards, 0)

    def summary(self) -> dict[str, float | int]:
        return {
            "new_tokens": self.new_tokens,
            "base_forwards": self.base_forwards,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance_rate": self.accepted / self.drafted if self.drafted else 0.0,
            "tokens_per_base_forward": self.new_tokens / self.base_forwards if self.base_forwards else 0.0,
        }


@torch.no_grad()
def speculative(
    base_model: torch.nn.Module,
    cut: Cut,
    prompts: list[PromptRecord],
    tokenizer,
    max_new_tokens: int = 64,
    draft_tokens: int = 4,
    progress=None,
) -> dict[str, SpecCounts]:
    """The cut drafts `draft_tokens` tokens per round (constant schedule, no early stop) for greedy
    assisted generation of its base; per-domain counts. Batch size 1 (assisted generation needs it)."""
    from transformers import GenerationConfig

    eos = sorted(_eos_ids(base_model, tokenizer))
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    totals: dict[str, SpecCounts] = {}
    calls: list[int] = []  # input length of every base forward

    def count(_module, _args, kwargs):
        ids = kwargs.get("input_ids")
        calls.append(int(ids.shape[1]) if ids is not None else 0)

    with cut.standalone() as draft, _quiet_transformers():
        saved = {
            k: getattr(draft.generation_config, k, None)
            for k in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
        }
        draft.generation_config.num_assistant_tokens = draft_tokens
        draft.generation_config.num_assistant_tokens_schedule = "constant"
        draft.generation_config.assistant_confidence_threshold = 0.0
        handle = base_model.register_forward_pre_hook(count, with_kwargs=True)
        try:
            for p in prompts:
                enc = tokenizer(render_prompt(tokenizer, p), return_tensors="pt", add_special_tokens=False)
                prompt_len = enc["input_ids"].shape[1]
                calls.clear()
                seq = base_model.generate(
                    **enc.to(input_device(base_model)), generation_config=config, assistant_model=draft
                )  # (1, S + new)
                t = totals.setdefault(p.domain, SpecCounts())
                t.new_tokens += seq.shape[1] - prompt_len
                t.base_forwards += len(calls)
                t.drafted += sum(n - (prompt_len if i == 0 else 1) for i, n in enumerate(calls))
                if progress:
                    progress(1)
        finally:
            handle.remove()
            for k, v in saved.items():
                setattr(draft.generation_config, k, v)
    return totals


def speculative_table(totals: dict[str, SpecCounts], in_domain: str | None, draft_tokens: int) -> dict[str, Any]:
    def pool(keys):
        s = SpecCounts()
        for k in keys:
            s.new_tokens += totals[k].new_tokens
            s.base_forwards += totals[k].base_forwards
            s.drafted += totals[k].drafted
        return s.summary() if keys else None

    return {
        "draft_tokens": draft_tokens,
        "per_domain": {d: t.summary() for d, t in sorted(totals.items())},
        "all": pool(list(totals)),
        "in_domain": pool([d for d in totals if in_domain and d == in_domain]),
        "off_domain": pool([d for d in totals if in_domain and d != in_domain]),
    }
