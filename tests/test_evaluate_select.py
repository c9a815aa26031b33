"""greedy-loss selection on a tiny random model, checked against an independent masked-loss loop."""

from __future__ import annotations

import math
import random

import pytest
import torch

from moeprint.errors import MoeprintError
from moeprint.evaluate.cut import load_model
from moeprint.select.greedy import calibration_batches, calibration_windows, greedy_loss_select

TEXTS = [
    "The court held that the contract was void because the seller had no title to the goods.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in the leaves.",
    "Le chat dort sur le canape pendant que la pluie tombe doucement sur la ville.",
]


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    base = load_model(tiny_model_dir)
    batches = calibration_batches(TEXTS, base.tokenizer, token_budget=200, window=32, batch_tokens=64)
    return base, batches


def independent_loss(base, kept, texts=TEXTS, budget=200, window=32) -> float:
    """Mean NLL one window at a time (no batching, no padding), log_softmax + gather, under the mask."""
    windows = calibration_windows(texts, base.tokenizer, budget, window)  # the same tokens as the batches
    total, n = 0.0, 0
    with torch.no_grad(), base.adapter.router_mask(base.model, kept):
        for w in windows:
            ids = torch.tensor([w])
            lp = torch.log_softmax(base.model(input_ids=ids).logits[0, :-1].double(), -1)
            total -= sum(float(lp[i, w[i + 1]]) for i in range(len(w) - 1))
            n += len(w) - 1
    return total / n


def shuffled_ranking(L: int, E: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(range(E), E) for _ in range(L)]


def test_greedy_loss_never_worse_than_starting_top_n(setup):
    base, batches = setup
    L, E = base.num_layers, base.num_experts
    for seed in (0, 1):
        ranking = shuffled_ranking(L, E, seed)
        sel = greedy_loss_select(base.model, base.adapter, batches, ranking, sizes=[4, 2], candidates=3)
        for n in (4, 2):
            top_n = tuple(tuple(sorted(r[:n])) for r in ranking)
            chosen = independent_loss(base, sel.kept[n])
            assert chosen <= independent_loss(base, top_n) + 1e-4
            assert sel.loss[n] == pytest.approx(chosen, rel=1e-4)  # the reported loss is the real one
            assert sel.initial_loss[n] == pytest.approx(independent_loss(base, top_n), rel=1e-4)
            assert sel.loss[n] == min(sel.greedy_loss[n], sel.initial_loss[n])


def test_greedy_output_is_valid_and_nested_along_the_path(setup):
    base, batches = setup
    L, E = base.num_layers, base.num_experts
    sel = greedy_loss_select(base.model, base.adapter, batches, shuffled_ranking(L, E, 3), sizes=[6, 3], candidates=2)
    for n, kept in sel.kept.items():
        assert len(kept) == L
        for layer in kept:
            assert len(layer) == n and list(layer) == sorted(set(layer)) and all(0 <= e < E for e in layer)
    # the path drops E - 3 experts per layer, each once; cost = rounds x layers x min(M, remaining) + comparisons
    assert all(len(order) == E - 3 and len(set(order)) == E - 3 for order in sel.removal_order)
    path = sum(L * min(2, size + 1) for size in range(E - 1, 2, -1))
    assert path <= sel.forward_passes <= path + 2


def test_first_greedy_step_drops_the_cheapest_candidate(setup):
    """With every expert a candidate, the first drop in layer 0 is the argmin of the independent single-drop losses."""
    base, batches = setup
    L, E = base.num_layers, base.num_experts
    ranking = [list(range(E)) for _ in range(L)]
    sel = greedy_loss_select(base.model, base.adapter, batches, ranking, sizes=[E - 1], candidates=E)
    full = [tuple(range(E)) for _ in range(L)]
    losses = {
        e: independent_loss(base, tuple(tuple(x for x in r if x != e) if i == 0 else r for i, r in enumerate(full)))
        for e in range(E)
    }
    best = min(losses.values())
    assert losses[sel.removal_order[0][0]] == pytest.approx(best, rel=1e-4)


def test_keeping_every_expert_keeps_everything_and_equals_the_full_model(setup):
    base, batches = setup
    L, E = base.num_layers, base.num_experts
    sel = greedy_loss_select(base.model, base.adapter, batches, shuffled_ranking(L, E, 5), sizes=[E])
    assert sel.kept[E] == tuple(tuple(range(E)) for _ in range(L))
    with torch.no_grad():
        full = independent_loss(base, sel.kept[E])
    assert sel.loss[E] == pytest.approx(full, rel=1e-4) and math.isfinite(full)


def test_bad_starting_ranking_or_size_is_one_clear_error(setup):
    base, batches = setup
    L, E = base.num_layers, base.num_experts
    with pytest.raises(MoeprintError, match="each of the"):
        greedy_loss_select(base.model, base.adapter, batches, [[0, 0] + list(range(2, E))] * L, sizes=[2])
    with pytest.raises(MoeprintError, match="within 1.."):
        greedy_loss_select(base.model, base.adapter, batches, shuffled_ranking(L, E, 0), sizes=[E + 1])


def test_greedy_plan_cli_writes_a_plan_never_worse_on_the_recorded_prompts(tmp_path, tiny_model_dir):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import assert_clean_error, run_cli
    from evaluate_helpers import domain_texts, make_run
    from moeprint.select.greedy import run_calibration_texts
    from moeprint.select.rankings import load_ranking

    run = make_run(tmp_path / "run", tiny_model_dir, domain_texts(seed=1, per_domain=3)).root
    out = tmp_path / "law-greedy-4.json"
    run_cli(
        "greedy-plan",
        run,
        "--domain",
        "law",
        "--experts",
        "4",
        "--from",
        "gate-mass",
        "--tokens",
        "4096",
        "--candidates",
        "2",
        "--out",
        out,
        check=True,
    )
    plan = json.loads(out.read_text())
    assert plan["criterion"] == "greedy-loss" and plan["n_experts"] == 4 and plan["domain"] == "law"
    assert all(len(k) == 4 and k == sorted(set(k)) for k in plan["kept"])
    base = load_model(tiny_model_dir)
    texts = run_calibration_texts(run, "law")  # 3 short prompts: the 4096-token budget takes all of them
    assert len(texts) == 3  # the law prompts only
    from moeprint.io.run import open_run

    ranking, _ = load_ranking(open_run(run), "gate-mass", "law")
    top4 = tuple(tuple(sorted(ranking[f"layer_{l}"][:4])) for l in range(base.num_layers))
    chosen = independent_loss(base, tuple(map(tuple, plan["kept"])), texts, budget=4096, window=256)
    assert chosen <= independent_loss(base, top4, texts, budget=4096, window=256) + 1e-4
    assert plan["extra"]["calibration_loss"] == pytest.approx(chosen, rel=1e-4)

    bad = run_cli("greedy-plan", run, "--domain", "cooking", "--experts", "4", "--out", tmp_path / "x.json")
    assert_clean_error(bad)
    assert "cooking" in bad.stderr and not (tmp_path / "x.json").exists()
