"""Evaluate-stage numbers against independent computations on a tiny random gpt-oss model."""

from __future__ import annotations

import contextlib
import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from evaluate_helpers import domain_texts, write_jsonl
from moeprint.evaluate import choice, generation, text
from moeprint.evaluate.cut import base_cut, load_model, plan_cut
from moeprint.evaluate.inputs import EvalText, choice_context, load_choice_questions
from moeprint.types import PrunePlan


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return load_model(tiny_model_dir)


def _plan(kept, domain="law"):
    return PrunePlan("tiny", "GptOssForCausalLM", domain, "test", len(kept[0]), 2, tuple(tuple(k) for k in kept))


def _texts():
    return [EvalText(r["id"], r["domain"], r["text"]) for r in domain_texts(seed=3, per_domain=3, n_words=25)]


def test_kl_formula_matches_torch_kl_div():
    gen = torch.Generator().manual_seed(0)
    base_lp = torch.log_softmax(torch.randn(5, 7, 50, generator=gen) * 3, -1)
    cut_lp = torch.log_softmax(torch.randn(5, 7, 50, generator=gen) * 3, -1)
    ours = text.kl_base_to_cut(base_lp, cut_lp)  # (5, 7)
    theirs = F.kl_div(cut_lp, base_lp, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert float(ours.min()) > 0


@torch.no_grad()
def test_perplexity_kl_agreement_match_unbatched_manual_forward(base):
    texts = _texts()
    kept = ((0, 2, 5, 7), (1, 2, 3, 6))
    cut = plan_cut(base, _plan(kept))
    windows = text.make_windows(texts, base.tokenizer, max_tokens=512)
    assert len(windows) == len(texts)  # one window per text: the manual side below needs no windowing
    # batch_tokens small enough for several padded batches of mixed lengths
    ref = text.build_reference(base_cut(base), windows, base.tokenizer.pad_token_id, batch_tokens=200)
    assert len(ref.groups) > 1
    got = text.summarise(text.compare_texts(ref, cut), "law")

    sums = {}
    for t in texts:
        ids = torch.tensor([base.tokenizer(t.text, add_special_tokens=False)["input_ids"]])  # (1, T)
        base_lp = torch.log_softmax(base.model(input_ids=ids).logits[0, :-1].float(), -1)  # (T-1, V)
        with base.adapter.router_mask(base.model, kept):
            cut_lp = torch.log_softmax(base.model(input_ids=ids).logits[0, :-1].float(), -1)
        target = ids[0, 1:]
        s = sums.setdefault(t.domain, [0, 0.0, 0.0, 0.0, 0])
        s[0] += len(target)
        s[1] += -float(base_lp[torch.arange(len(target)), target].sum())
        s[2] += -float(cut_lp[torch.arange(len(target)), target].sum())
        s[3] += float(F.kl_div(cut_lp, base_lp, log_target=True, reduction="sum"))
        s[4] += int((base_lp.argmax(-1) == cut_lp.argmax(-1)).sum())
    for domain, (n, nll_b, nll_c, kl, agree) in sums.items():
        m = got["per_domain"][domain]
        assert m["n_tokens"] == n
        assert m["ppl_base"] == pytest.approx(math.exp(nll_b / n), rel=1e-5)
        assert m["ppl_cut"] == pytest.approx(math.exp(nll_c / n), rel=1e-5)
        assert m["kl"] == pytest.approx(kl / n, rel=1e-4, abs=1e-7)
        assert m["top1_agreement"] == pytest.approx(agree / n)
    assert got["per_domain"]["law"]["kl"] > 0  # the mask really changed the model
    assert got["in_domain"] == got["per_domain"]["law"]
    assert got["off_domain"] == got["per_domain"]["math"]


def test_plan_keeping_every_expert_has_kl_zero_and_retention_one(base):
    windows = text.make_windows(_texts(), base.tokenizer)
    ref = text.build_reference(base_cut(base), windows, base.tokenizer.pad_token_id)
    everything = tuple(tuple(range(base.num_experts)) for _ in range(base.num_layers))
    got = text.summarise(text.compare_texts(ref, plan_cut(base, _plan(everything))), "law")
    for m in got["per_domain"].values():
        assert m["kl"] == 0.0
        assert m["retention"] == 1.0 and m["ppl_ratio"] == 1.0
        assert m["top1_agreement"] == 1.0


@torch.no_grad()
def test_multiple_choice_accuracy_matches_manual_loglik(base, tmp_path):
    rows = [
        {"question": "Which word is legal?", "choices": ["court", "prime", "matrix"], "answer": 0, "domain": "law"},
        {
            "question": "Which is maths?",
            "choices": ["tort", "lemma", "appeal", "ruling"],
            "answer": "B",
            "domain": "math",
        },
        {
            "question": "Pick a proof word",
            "correct_answer": "theorem",
            "incorrect_answers": ["judge", "counsel"],
            "domain": "math",
        },
        {
            "Question": "Plaintiff is",
            "Correct Answer": "a party",
            "Incorrect Answer 1": "a sum",
            "Incorrect Answer 2": "a limit",
            "Incorrect Answer 3": "a series",
            "domain": "law",
        },
    ]
    questions = load_choice_questions(write_jsonl(tmp_path / "mc.jsonl", rows))
    assert questions[1].answer == 1
    assert questions[2].choices[questions[2].answer] == "theorem"
    kept = ((0, 1, 4), (2, 5, 6))
    cut = plan_cut(base, _plan(kept))
    scored = choice.score_choices(cut, questions, base.tokenizer, batch_size=3)

    def manual_answers(masked: bool) -> list[int]:
        """Each question's highest-likelihood choice, one unbatched forward per choice."""
        answers = []
        with base.adapter.router_mask(base.model, kept) if masked else contextlib.nullcontext():
            for q, s in zip(questions, scored):
                manual = []
                for c in q.choices:
                    ctx = base.tokenizer(choice_context(q), add_special_tokens=False)["input_ids"]
                    cont = base.tokenizer(" " + c, add_special_tokens=False)["input_ids"]
                    ids = torch.tensor([ctx + cont])
                    lp = torch.log_softmax(base.model(input_ids=ids).logits[0].float(), -1)  # (T, V)
                    manual.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
                if masked:
                    assert s.loglik == pytest.approx(tuple(manual), rel=1e-5)
                answers.append(max(range(len(manual)), key=manual.__getitem__))
        return answers

    cut_answers, base_answers = manual_answers(masked=True), manual_answers(masked=False)
    base_scored = choice.score_choices(base_cut(base), questions, base.tokenizer, batch_size=2)
    table = choice.accuracy_table(base_scored, scored, "law")
    n = len(questions)
    assert table["all"]["acc_cut"] == sum(a == q.answer for a, q in zip(cut_answers, questions)) / n
    assert table["all"]["acc_base"] == sum(a == q.answer for a, q in zip(base_answers, questions)) / n
    assert table["all"]["same_answer"] == sum(a == b for a, b in zip(cut_answers, base_answers)) / n
    law = [i for i, q in enumerate(questions) if q.domain == "law"]
    assert table["per_domain"]["law"]["n"] == table["in_domain"]["n"] == len(law)
    assert table["off_domain"]["n"] == n - len(law)


def _loops_brute_force(tokens, min_span=12, max_period=16):
    n = len(tokens)
    for p, i in itertools.product(range(1, max_period + 1), range(n)):
        for j in range(n, i, -1):
            span = j - i
            if span >= max(min_span, 3 * p) and all(tokens[i + x] == tokens[i + x % p] for x in range(span)):
                return True
    return False


def test_looping_detector_matches_brute_force():
    assert generation.is_looping([7] * 12) and not generation.is_looping([7] * 11)
    assert generation.is_looping([1, 2, 3, 4, 5] * 3)  # a 5-token phrase three times: 15 tokens
    assert not generation.is_looping([1, 2, 3, 4, 5, 6, 7] * 2)  # two copies are not a loop
    assert not generation.is_looping(list(range(40)))
    rng = random.Random(0)
    for _ in range(300):
        unit = [rng.randrange(3) for _ in range(rng.randint(1, 6))]
        seq = [rng.randrange(4) for _ in range(rng.randint(0, 8))] + unit * rng.randint(1, 6)
        seq += [rng.randrange(4) for _ in range(rng.randint(0, 8))]
        assert generation.is_looping(seq) == _loops_brute_force(seq), seq


def test_speculative_draft_counts(base):
    from moeprint.types import PromptRecord

    prompts = [
        PromptRecord("p1", "law", "test", text="The court ruled"),
        PromptRecord("p2", "math", "test", text="A prime"),
    ]
    everything = tuple(tuple(range(base.num_experts)) for _ in range(base.num_layers))
    same = generation.speculative(
        base.model, plan_cut(base, _plan(everything)), prompts, base.tokenizer, max_new_tokens=20, draft_tokens=4
    )
    for counts in same.values():
        s = counts.summary()
        # a draft identical to its base is always accepted: 4 drafted + 1 own token per base forward
        assert s["acceptance_rate"] == 1.0 and s["new_tokens"] == 20 and s["base_forwards"] == 4
    weak = generation.speculative(
        base.model, plan_cut(base, _plan(((0,), (1,)))), prompts, base.tokenizer, max_new_tokens=20, draft_tokens=4
    )
    total = sum(c.accepted for c in weak.values()) / sum(c.drafted for c in weak.values())
    assert total < 1.0  # a one-expert draft disagrees with its base sometimes
    assert all(0 < c.drafted <= 4 * c.base_forwards for c in weak.values())
