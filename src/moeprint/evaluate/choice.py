"""Multiple-choice accuracy by log-likelihood: each choice is scored as the continuation of the
question, the highest total log-probability wins (`acc`), or the highest per-byte log-probability
(`acc_norm`, which does not favour short answers). Base and cut see identical token sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moeprint.evaluate.cut import Cut
from moeprint.evaluate.inputs import ChoiceQuestion, choice_context
from moeprint.io.loader import input_device


@dataclass(frozen=True)
class Scored:
    """Log-likelihood of every choice of one question."""

    question: ChoiceQuestion
    loglik: tuple[float, ...]

    @property
    def correct(self) -> bool:
        return max(range(len(self.loglik)), key=lambda i: self.loglik[i]) == self.question.answer

    @property
    def correct_norm(self) -> bool:
        per_byte = [ll / max(len(c.encode()), 1) for ll, c in zip(self.loglik, self.question.choices)]
        return max(range(len(per_byte)), key=lambda i: per_byte[i]) == self.question.answer


def choice_sequences(questions: list[ChoiceQuestion], tokenizer) -> list[tuple[list[int], int]]:
    """(context + continuation token ids, number of continuation tokens) for every (question, choice)."""
    out = []
    for q in questions:
        ctx = tokenizer(choice_context(q), add_special_tokens=False)["input_ids"]
        for choice in q.choices:
            cont = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            out.append((ctx + cont, len(cont)))
    return out


@torch.no_grad()
def score_choices(
    cut: Cut, questions: list[ChoiceQuestion], tokenizer, batch_size: int = 16, progress=None
) -> list[Scored]:
    seqs = choice_sequences(questions, tokenizer)
    pad_id = tokenizer.pad_token_id
    loglik = [0.0] * len(seqs)
    with cut.active():
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, S), right-padded
            attention = torch.zeros_like(input_ids)
            for row, (ids, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            device = input_device(cut.model)
            logits = cut.model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False
            ).logits  # (B, S, V)
            lp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, (ids, n_cont) in enumerate(chunk):
                n = len(ids)
                positions = torch.arange(n - n_cont - 1, n - 1)  # predictions of the continuation tokens
                targets = torch.tensor(ids[n - n_cont :])
                loglik[start + row] = float(lp[row, positions, targets].double().sum())
            if progress:
                progress(len(chunk))
    out, i = [], 0
    for q in questions:
        out.append(Scored(q, tuple(loglik[i : i + len(q.choices)])))
        i += len(q.choices)
    return out


def accuracy_table(base: list[Scored], cut: list[Scored], in_domain: str | None) -> dict:
    """Accuracy of base and cut per domain, pooled, in-domain and off-domain."""

    def summary(pairs: list[tuple[Scored, Scored]]) -> dict | None:
        if not pairs:
            return None
        n = len(pairs)
        acc_base = sum(b.correct for b, _ in pairs) / n
        acc_cut = sum(c.correct for _, c in pairs) / n
        return {
            "n": n,
            "acc_base": acc_base,
            "acc_cut": acc_cut,
            "acc_norm_base": sum(b.correct_norm for b, _ in pairs) / n,
            "acc_norm_cut": sum(c.correct_norm for _, c in pairs) / n,
            "same_answer": sum(_argmax(b.loglik) == _argmax(c.loglik) for b, c in pairs) / n,
        }

    pairs = list(zip(base, cut))
    domains = sorted({b.question.domain for b in base})
    return {
        "per_domain": {d: summary([p for p in pairs if p[0].question.domain == d]) for d in domains},
        "all": summary(pairs),
        "in_domain": summary([p for p in pairs if in_domain and p[0].question.domain == in_domain]),
        "off_domain": summary([p for p in pairs if in_domain and p[0].question.domain != in_domain]),
    }


def _argmax(values: tuple[float, ...]) -> int:
    return max(range(len(values)), key=lambda i: values[i])
