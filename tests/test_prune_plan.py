"""Plans: built from run rankings or published files, validated before any weight is read."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import assert_clean_error, run_cli
from moeprint.errors import MoeprintError
from moeprint.select.plan import (
    load_plan,
    model_signature,
    plan_from_ranking,
    plan_from_run,
    save_plan,
    validate_plan,
)
from moeprint.types import ModelSignature, PrunePlan
from prune_helpers import assert_error_line, main_in_process, random_ranking, write_run

SIG = ModelSignature("GptOssForCausalLM", num_layers=3, num_experts=8, top_k=2)
SIG_TINY = ModelSignature("GptOssForCausalLM", num_layers=2, num_experts=8, top_k=2)  # conftest's tiny model


def test_plan_keeps_the_first_n_of_each_layer_sorted():
    ranking = random_ranking(3, 8, seed=1)
    for n in (1, 2, 5, 8):
        plan = plan_from_ranking(ranking, n, SIG, base_model="m", domain="law", criterion="c")
        assert plan.kept == tuple(tuple(sorted(ranking[f"layer_{i}"][:n])) for i in range(3))
        assert plan.effective_top_k == min(2, n)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("layer_2"), "covers layers"),
        (lambda r: r.__setitem__("layer_0", [0, 0, 1, 2, 3, 4, 5, 6]), "repeats an id"),
        (lambda r: r.__setitem__("layer_1", [9, 0, 1, 2, 3, 4, 5, 6]), "outside 0..7"),
        (lambda r: r.__setitem__("layer_1", [1, 2]), "ranks only 2"),
        (lambda r: r.__setitem__("layer_1", "1,2,3"), "not a list"),
    ],
)
def test_bad_rankings_are_refused(mutate, message):
    ranking = random_ranking(3, 8)
    mutate(ranking)
    with pytest.raises(MoeprintError, match=message):
        plan_from_ranking(ranking, 3, SIG, base_model="m", domain="d", criterion="c")


@pytest.mark.parametrize("n", [0, 9, -1])
def test_expert_count_out_of_range(n):
    with pytest.raises(MoeprintError, match="between 1 and 8"):
        plan_from_ranking(random_ranking(3, 8), n, SIG, base_model="m", domain="d", criterion="c")


def test_validate_against_another_model():
    plan = plan_from_ranking(random_ranking(3, 8), 4, SIG, base_model="m", domain="d", criterion="c")
    with pytest.raises(MoeprintError, match="covers 3 layers"):
        validate_plan(plan, replace(SIG, num_layers=24))
    with pytest.raises(MoeprintError, match="8 experts per layer"):
        validate_plan(plan, replace(SIG, num_experts=32))
    with pytest.raises(MoeprintError, match="top-4"):
        validate_plan(plan, replace(SIG, top_k=4))
    with pytest.raises(MoeprintError, match="MixtralForCausalLM"):
        validate_plan(plan, replace(SIG, architecture="MixtralForCausalLM"))
    unsorted = PrunePlan("m", SIG.architecture, "d", "c", 2, 2, ((1, 0), (0, 1), (0, 1)))
    with pytest.raises(MoeprintError, match="not ascending"):
        validate_plan(unsorted, SIG)


def test_plan_from_run_and_cli(tmp_path, tiny_model_dir, capsys):
    run = write_run(tmp_path / "run", tiny_model_dir)
    ranking = json.loads((run / "fingerprints/rankings/reap/math.json").read_text())
    plan = plan_from_run(run, "math", 3, "reap")
    assert plan.kept == tuple(tuple(sorted(ranking[f"layer_{i}"][:3])) for i in range(2))
    assert plan.criterion == "reap" and plan.domain == "math" and plan.base_model == str(tiny_model_dir)

    out = tmp_path / "plan.json"
    run_cli("plan", run, "--domain", "math", "--experts", "3", "--criterion", "reap", "--out", out, check=True)
    assert load_plan(out) == plan
    assert model_signature(json.loads((tiny_model_dir / "config.json").read_text())).num_experts == 8

    bad = [
        (["--domain", "poetry", "--experts", "3", "--criterion", "reap"], "unknown domain"),
        (["--domain", "math", "--experts", "3", "--criterion", "vibes"], "unknown criterion"),
        (["--experts", "3", "--criterion", "reap"], "give RUN_DIR and --domain"),
        (["--domain", "math", "--experts", "3"], "choose one with --criterion"),
        (["--domain", "math", "--experts", "0", "--criterion", "reap"], "between 1 and 8"),
        (["--domain", "math", "--experts", "9", "--criterion", "reap"], "between 1 and 8"),
    ]
    proc = run_cli("plan", run, *bad[0][0], "--out", tmp_path / "bad.json")  # the real entry point, once
    assert_clean_error(proc)
    assert bad[0][1] in proc.stderr
    for args, message in bad[1:]:  # the same `main`, in process
        assert_error_line(*main_in_process(capsys, "plan", run, *args, "--out", tmp_path / "bad.json"), message)
    assert_error_line(
        *main_in_process(
            capsys, "plan", tmp_path / "nowhere", "--domain", "x", "--experts", "3", "--out", tmp_path / "bad.json"
        ),
        "does not exist",
    )
    assert not (tmp_path / "bad.json").exists()


def test_plan_from_published_ranking(tmp_path, shared_data, tiny_model_dir, capsys):
    """The published 24-layer rankings are refused for a 2-layer model, and accepted for a 24 x 32 config."""
    law = shared_data / "topical_analytics" / "law.json"
    code, err = main_in_process(
        capsys, "plan", "--ranking", law, "--model", tiny_model_dir, "--experts", "8", "--out", tmp_path / "p.json"
    )
    assert_error_line(code, err, "covers layers")

    model = tmp_path / "gpt-oss-20b-config"
    model.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config.update(num_hidden_layers=24, num_local_experts=32, num_experts_per_tok=4)
    (model / "config.json").write_text(json.dumps(config))
    run_cli("plan", "--ranking", law, "--model", model, "--experts", "8", "--out", tmp_path / "p.json", check=True)
    plan = load_plan(tmp_path / "p.json")
    published = json.loads(law.read_text())
    assert plan.domain == "law" and plan.n_experts == 8 and plan.top_k == 4
    assert [list(k) for k in plan.kept] == [sorted(published[f"layer_{i}"][:8]) for i in range(24)]


# Written by moeprint before base_num_experts became a PrunePlan field (commit 1a23cd2):
# `moeprint plan --ranking law.json --model tiny --experts 3 --out old_plan.json` with LAW_RANKING as law.json.
LAW_RANKING = '{"layer_0": [0, 5, 2, 7, 4, 1, 6, 3], "layer_1": [3, 0, 5, 2, 7, 4, 1, 6]}'
OLD_PLAN = """{
 "base_model": "tiny",
 "architecture": "GptOssForCausalLM",
 "domain": "law",
 "criterion": "published",
 "n_experts": 3,
 "top_k": 2,
 "kept": [[0, 2, 5], [0, 3, 5]],
 "extra": {
  "base_num_experts": 8,
  "ranking_source": "law.json",
  "calibration": {
   "source": "ranking file law.json",
   "sha256": "1ed27fa00233072a86fad60a9cabfe51fdd1c9abadfed6426c3414985292b5d1"
  }
 }
}"""


def test_a_plan_written_before_the_typed_field_round_trips(tmp_path, tiny_model_dir):
    old = tmp_path / "old.json"
    old.write_text(OLD_PLAN)
    plan = load_plan(old)
    assert plan.base_num_experts == 8 and "base_num_experts" not in plan.extra
    assert list(plan.extra) == ["ranking_source", "calibration"]
    assert validate_plan(plan, SIG_TINY) is plan
    with pytest.raises(MoeprintError, match="made for a model with 8 experts per layer; this model has 16"):
        validate_plan(plan, replace(SIG_TINY, num_experts=16))
    save_plan(plan, tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again == json.loads(OLD_PLAN) and list(again["extra"]) == list(json.loads(OLD_PLAN)["extra"])

    # today's `moeprint plan` writes the same file from the same inputs
    (tmp_path / "tiny").symlink_to(tiny_model_dir)
    (tmp_path / "law.json").write_text(LAW_RANKING)
    run_cli(
        "plan",
        "--ranking",
        "law.json",
        "--model",
        "tiny",
        "--experts",
        "3",
        "--out",
        "new.json",
        cwd=tmp_path,
        check=True,
    )
    assert json.loads((tmp_path / "new.json").read_text()) == json.loads(OLD_PLAN)


def test_base_num_experts_has_one_home():
    with pytest.raises(ValueError, match="PrunePlan field"):
        PrunePlan("m", "GptOssForCausalLM", "d", "c", 1, 1, ((0,),), extra={"base_num_experts": 8})
    with_field = PrunePlan("m", "GptOssForCausalLM", "d", "c", 1, 1, ((0,),), extra={"seed": 3}, base_num_experts=8)
    assert with_field.to_json()["extra"] == {"base_num_experts": 8, "seed": 3}
    assert "extra" not in PrunePlan("m", "GptOssForCausalLM", "d", "c", 1, 1, ((0,),)).to_json()


def test_the_dispatch_draws_the_sweeps_random_floor(tiny_model_dir):
    from moeprint.select.rankings import random_kept
    from moeprint.select.sources import PlanSource, build_plan

    plans = [build_plan(PlanSource(random_seed=seed, model=tiny_model_dir), 3) for seed in (0, 0, 1)]
    assert plans[0] == plans[1] and plans[0].kept != plans[2].kept
    assert plans[0].kept == random_kept(2, 8, 3, 0)  # the sweep's random cut of seed 0
    for plan in plans:
        assert plan.criterion == "random" and plan.domain == "" and plan.base_num_experts == 8
        assert all(len(set(k)) == 3 and list(k) == sorted(k) and set(k) <= set(range(8)) for k in plan.kept)
    with pytest.raises(MoeprintError, match="random plan needs a model folder"):
        build_plan(PlanSource(random_seed=0), 3)
