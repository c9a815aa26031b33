"""DeepSeek-V3 (and Kimi-K2), GLM-4.5, Qwen3.5-MoE, ERNIE-4.5, MiniMax-M2 and Llama-4: config reading (tiny and
published configs), recording, group-limited plans and the exactness oracle, each against an independent
computation. (No test name says "real": these need no data, so `-k "not real"` must not skip them.)

- recording: captured ids/weights/logits equal the family's routing written out here from its formula
  (sigmoid + selection-only correction bias + best-two group scores + top-k + renormalise x scaling for
  DeepSeek-V3 / GLM-4.5; softmax + top-k + renormalise for Qwen3.5; softmax or sigmoid + selection-only bias
  for ERNIE-4.5 / MiniMax-M2; top-k of the logits with sigmoid weights for Llama-4), from each MoE block's input;
- exactness oracle: a pruned checkpoint loaded with stock AutoModelForCausalLM computes the same logits as the
  masked base, bit for bit, for N in {1, top_k, E-1, E} or their group-valid equivalents, per-expert and fused,
  and once in bfloat16;
- plans: group-limited routing keeps the same number of experts in every group, refused with one line otherwise;
- parameter counts of the published configs equal the published totals; a cut removes exactly (E-N) experts' weights
  and router rows per MoE layer.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from arch_helpers import record_with_inputs
from conftest import run_cli
from family_configs import (
    DEEPSEEK_V3,
    ERNIE4_5_21B_A3B,
    GLM4_5_AIR,
    KIMI_K2,
    LLAMA4_SCOUT,
    MINIMAX_M2,
    PUBLISHED_TOTALS,
    QWEN3_5_35B_A3B,
)
from family_helpers import MOE_LAYERS, NEW_FAMILIES, ORACLE_SIZES, TOP_K, E, build_model, build_tiny, tiny_config
from moeprint.adapters import adapter_for, load_config_dict
from moeprint.adapters.base import ExpertGroups
from moeprint.adapters.deepseek_v3 import DEEPSEEK_V3 as DEEPSEEK_ADAPTER
from moeprint.adapters.ernie4_5_moe import ERNIE4_5_MOE
from moeprint.adapters.glm4_moe import GLM4_MOE
from moeprint.adapters.llama4 import LLAMA4
from moeprint.adapters.minimax_m2 import MINIMAX_M2 as MINIMAX_M2_ADAPTER
from moeprint.adapters.qwen3_5_moe import QWEN3_5_MOE
from moeprint.adapters.size import cut_parameter_count, parameter_count, stored_numel
from moeprint.errors import MoeprintError
from moeprint.prune import build_checkpoint
from moeprint.select.plan import model_signature, plan_from_ranking, validate_plan
from moeprint.select.rankings import random_kept
from prune_helpers import assert_error_line, main_in_process, random_ranking, read_tensors

ADAPTER = {
    "deepseek_v3": DEEPSEEK_ADAPTER,
    "glm4_moe": GLM4_MOE,
    "qwen3_5_moe": QWEN3_5_MOE,
    "ernie4_5_moe": ERNIE4_5_MOE,
    "minimax_m2": MINIMAX_M2_ADAPTER,
    "llama4": LLAMA4,
}


@pytest.fixture(scope="module")
def token_ids():
    return torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))  # (B, S)


# ---- the routing, written out from each family's formula ------------------------------------------------
def sigmoid_group_routing(x, weight, bias, *, n_group, topk_group, top_k, normalize, scaling):
    """DeepSeek-V3 / GLM-4.5 routing by hand: sort-based, no call into the adapter."""
    logits = x.float() @ weight.float().T  # (T, E)
    scores = 1.0 / (1.0 + torch.exp(-logits))
    choice = scores + bias  # the correction bias chooses, it does not weigh
    T, n = choice.shape
    size = n // n_group
    best_two = choice.view(T, n_group, size).sort(dim=-1, descending=True).values[..., :2].sum(-1)  # (T, G)
    groups = best_two.argsort(dim=-1, descending=True)[:, :topk_group]  # (T, topk_group)
    allowed = torch.zeros(T, n, dtype=torch.bool)
    for t in range(T):
        for g in groups[t].tolist():
            allowed[t, g * size : (g + 1) * size] = True
    ids = torch.where(allowed, choice, torch.tensor(float("-inf"))).argsort(dim=-1, descending=True)[:, :top_k]
    weights = scores.gather(1, ids)
    if normalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return ids, weights * scaling, logits


def softmax_routing(x, weight, *, top_k):
    logits = x @ weight.T  # (T, E)
    probs = torch.exp(logits - logits.max(-1, keepdim=True).values)
    probs = probs / probs.sum(-1, keepdim=True)
    top = probs.sort(dim=-1, descending=True)
    weights = top.values[:, :top_k]
    return top.indices[:, :top_k], weights / weights.sum(-1, keepdim=True), logits


def by_id(ids, weights):
    """Rows reordered by expert id: routers that take an unsorted top-k may list the same choice in any order."""
    order = ids.argsort(dim=-1)
    return ids.gather(1, order), weights.gather(1, order)


def biased_choice_routing(x, weight, bias, *, top_k, sigmoid, norm_min=0.0):
    """ERNIE-4.5 (softmax) / MiniMax-M2 (sigmoid): the bias chooses among all experts, weights renormalised."""
    logits = x.float() @ weight.float().T  # (T, E)
    if sigmoid:
        scores = 1.0 / (1.0 + torch.exp(-logits))
    else:
        scores = torch.exp(logits - logits.max(-1, keepdim=True).values)
        scores = scores / scores.sum(-1, keepdim=True)
    ids = (scores + bias.reshape(-1)).argsort(dim=-1, descending=True)[:, :top_k]
    weights = scores.gather(1, ids)
    return ids, weights / weights.sum(-1, keepdim=True).clamp(min=norm_min), logits


def expected_routing(family, config, block, x):
    router = ADAPTER[family].router(block)
    if family == "qwen3_5_moe":
        return softmax_routing(x, router.weight, top_k=TOP_K)
    if family == "ernie4_5_moe":
        bias = router.moe_statics.e_score_correction_bias
        return biased_choice_routing(x, router.weight, bias, top_k=TOP_K, sigmoid=False, norm_min=config.moe_norm_min)
    if family == "minimax_m2":
        return biased_choice_routing(x, router.weight, block.e_score_correction_bias, top_k=TOP_K, sigmoid=True)
    if family == "llama4":  # top-k of the logits, each weighed by its sigmoid
        logits = x @ router.weight.T  # (T, E)
        ids = logits.argsort(dim=-1, descending=True)[:, :TOP_K]
        return ids, 1.0 / (1.0 + torch.exp(-logits.gather(1, ids))), logits
    return sigmoid_group_routing(
        x,
        router.weight,
        router.e_score_correction_bias,
        n_group=config.n_group,
        topk_group=config.topk_group,
        top_k=TOP_K,
        normalize=config.norm_topk_prob,
        scaling=config.routed_scaling_factor,
    )


# ---- config -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_adapter_reads_tiny_config(family):
    config = tiny_config(family)
    adapter = adapter_for(config)
    assert adapter is ADAPTER[family]
    assert adapter.moe_layers(config) == MOE_LAYERS[family]
    assert (adapter.num_experts(config), adapter.top_k(config)) == (E, TOP_K)
    saved = config.to_dict()  # as transformers writes config.json
    assert adapter.moe_layers(saved) == MOE_LAYERS[family] and adapter.num_experts(saved) == E
    pruned = adapter.pruned_config(saved, 4)
    assert adapter.num_experts(pruned) == 4 and adapter.top_k(pruned) == TOP_K
    groups = adapter.expert_groups(saved)
    expected = {"deepseek_v3": (2, 1), "glm4_moe": (1, 1)}.get(family)
    assert (groups and (groups.n_group, groups.topk_group)) == expected


def test_published_config_of_deepseek_v3():
    adapter = adapter_for(DEEPSEEK_V3)
    assert adapter is DEEPSEEK_ADAPTER
    assert adapter.moe_layers(DEEPSEEK_V3) == list(range(3, 61))  # 3 dense layers, then 58 MoE layers
    assert (adapter.num_experts(DEEPSEEK_V3), adapter.top_k(DEEPSEEK_V3)) == (256, 8)
    groups = adapter.expert_groups(DEEPSEEK_V3)
    assert (groups.n_group, groups.topk_group) == (8, 4)
    # the routing reads n_group, topk_group, norm_topk_prob and routed_scaling_factor from these spellings
    torch.manual_seed(0)
    logits, bias = torch.randn(6, 256), torch.randn(256) * 0.1
    ids, weights = adapter.routing(DEEPSEEK_V3)(logits, 8, e_score_correction_bias=bias)
    x, eye = logits, torch.eye(256)  # logits = x @ I^T
    want_ids, want_w, _ = sigmoid_group_routing(
        x, eye, bias, n_group=8, topk_group=4, top_k=8, normalize=True, scaling=2.5
    )
    got, want = by_id(ids, weights), by_id(want_ids, want_w)
    assert torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1], atol=1e-6)
    pruned = adapter.pruned_config(DEEPSEEK_V3, 16)
    assert (pruned["n_routed_experts"], pruned["num_experts_per_tok"], pruned["n_group"], pruned["topk_group"]) == (
        16,
        8,
        8,
        4,
    )
    signature = model_signature(DEEPSEEK_V3)
    assert signature.expert_groups == (8, 4) and signature.num_layers == 58
    # 8 experts leave 1 per group (a group is scored by its best two); 16 leave 2 and 4 groups hold 8 = top-k
    assert "keep at least 16" in groups.budget_error(8, 8)
    assert "split equally" in groups.budget_error(20, 8)
    assert groups.budget_error(16, 8) is None and groups.budget_error(248, 8) is None


def test_published_configs_of_ernie_and_minimax():
    ernie = adapter_for(ERNIE4_5_21B_A3B)
    assert ernie is ERNIE4_5_MOE and ernie.moe_layers(ERNIE4_5_21B_A3B) == list(range(1, 28))
    assert (ernie.num_experts(ERNIE4_5_21B_A3B), ernie.top_k(ERNIE4_5_21B_A3B)) == (64, 6)
    assert ernie.moe_layers({**ERNIE4_5_21B_A3B, "moe_layer_end_index": -1}) == list(range(1, 28))
    assert ernie.moe_layers({**ERNIE4_5_21B_A3B, "moe_layer_interval": 2}) == list(range(1, 28, 2))
    pruned = ernie.pruned_config(ERNIE4_5_21B_A3B, 4)
    assert (pruned["moe_num_experts"], pruned["moe_k"]) == (4, 4)
    minimax = adapter_for(MINIMAX_M2)
    assert minimax is MINIMAX_M2_ADAPTER and minimax.moe_layers(MINIMAX_M2) == list(range(62))
    assert (minimax.num_experts(MINIMAX_M2), minimax.top_k(MINIMAX_M2)) == (256, 8)
    pruned = minimax.pruned_config(MINIMAX_M2, 16)
    assert (pruned["num_local_experts"], pruned["num_experts_per_tok"]) == (16, 8)
    # the routing keywords these families read: the bias chooses, the weights are renormalised probabilities
    torch.manual_seed(0)
    logits, bias = torch.randn(5, 64), torch.randn(64) * 0.05
    for adapter, config, sigmoid in ((ernie, ERNIE4_5_21B_A3B, False), (minimax, MINIMAX_M2, True)):
        ids, weights = adapter.routing(config)(logits, 6, e_score_correction_bias=bias)
        want = biased_choice_routing(logits, torch.eye(64), bias, top_k=6, sigmoid=sigmoid, norm_min=1e-12)
        got, want = by_id(ids, weights), by_id(want[0], want[1])
        assert torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1], atol=1e-6)


def test_published_config_of_llama4_scout():
    adapter = adapter_for(LLAMA4_SCOUT)
    assert adapter is LLAMA4 and adapter.moe_layers(LLAMA4_SCOUT) == list(range(48))
    assert (adapter.num_experts(LLAMA4_SCOUT), adapter.top_k(LLAMA4_SCOUT)) == (16, 1)
    text = {k: v for k, v in LLAMA4_SCOUT["text_config"].items() if k != "moe_layers"}
    assert adapter.moe_layers({**text, "interleave_moe_layer_step": 2}) == list(range(1, 48, 2))  # Maverick's rule
    pruned = adapter.pruned_config(LLAMA4_SCOUT, 4)
    assert pruned["text_config"]["num_local_experts"] == 4 and pruned["text_config"]["num_experts_per_tok"] == 1
    assert adapter_for(text) is LLAMA4  # the text config of a loaded model names only its type
    logits = torch.randn(5, 16)
    ids, weights = adapter.routing(LLAMA4_SCOUT)(logits, 1)
    assert torch.equal(ids[:, 0], logits.argmax(-1)) and torch.allclose(
        weights[:, 0], torch.sigmoid(logits.max(-1).values)
    )


def test_published_config_of_kimi_k2():
    """DeepSeek-V3's class with one expert group: any N >= 2 keeps the routing."""
    adapter = adapter_for(KIMI_K2)
    assert adapter is DEEPSEEK_ADAPTER and adapter.moe_layers(KIMI_K2) == list(range(1, 61))
    assert (adapter.num_experts(KIMI_K2), adapter.top_k(KIMI_K2)) == (384, 8)
    groups = adapter.expert_groups(KIMI_K2)
    assert (groups.n_group, groups.topk_group) == (1, 1) and groups.budget_error(2, 8) is None
    assert "keep at least 2" in groups.budget_error(1, 8)
    total = parameter_count(KIMI_K2)
    assert abs(total / 1e12 - 1) < 0.1  # published as "1T"
    per_expert = 3 * 7168 * 2048 + 7168 + 1  # gate, up, down + router row + correction bias
    assert cut_parameter_count(KIMI_K2, 96) == total - 60 * (384 - 96) * per_expert


def test_published_configs_of_glm_and_qwen3_5():
    glm = adapter_for(GLM4_5_AIR)
    assert glm is GLM4_MOE and glm.moe_layers(GLM4_5_AIR) == list(range(1, 46))
    assert (glm.num_experts(GLM4_5_AIR), glm.top_k(GLM4_5_AIR)) == (128, 8)
    groups = glm.expert_groups(GLM4_5_AIR)
    assert (
        (groups.n_group, groups.topk_group) == (1, 1)
        and groups.budget_error(1, 8)
        and groups.budget_error(2, 8) is None
    )
    qwen = adapter_for(QWEN3_5_35B_A3B)
    assert qwen is QWEN3_5_MOE and qwen.moe_layers(QWEN3_5_35B_A3B) == list(range(40))
    assert (qwen.num_experts(QWEN3_5_35B_A3B), qwen.top_k(QWEN3_5_35B_A3B)) == (256, 8)
    assert qwen.expert_groups(QWEN3_5_35B_A3B) is None
    pruned = qwen.pruned_config(QWEN3_5_35B_A3B, 4)
    assert pruned["text_config"]["num_experts"] == 4 and pruned["text_config"]["num_experts_per_tok"] == 4
    assert QWEN3_5_35B_A3B["text_config"]["num_experts"] == 256  # the input is not modified
    assert "num_experts" not in pruned and pruned["vision_config"] == QWEN3_5_35B_A3B["vision_config"]
    # the text config AutoModelForCausalLM loads from such a folder names no architecture, only its type
    assert adapter_for({**QWEN3_5_35B_A3B["text_config"]}) is QWEN3_5_MOE


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_parameter_count_of_published_config_and_its_cuts(family):
    config, published, unit = PUBLISHED_TOTALS[family]
    total = parameter_count(config)
    assert abs(total / 1e9 - published) < unit, f"{family}: {total / 1e9:.2f}B vs published {published}B"
    adapter = adapter_for(config)
    text = adapter.text_config(config)
    hidden = text["hidden_size"]
    # one routed expert: gate, up, down (3 H x I) + its router row (H) + its correction bias for sigmoid routers
    inter = text["intermediate_size" if family in ("minimax_m2", "llama4") else "moe_intermediate_size"]
    per_expert = 3 * hidden * inter + hidden + (1 if adapter.router_buffers else 0)
    n_moe, n_total = adapter.num_layers(config), adapter.num_experts(config)
    for n in (n_total // 2, n_total // 4, 16):  # the columns of the table in docs/architectures.md
        assert cut_parameter_count(config, n) == total - n_moe * (n_total - n) * per_expert


# ---- recording --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_recorded_routing_equals_the_family_formula(family, token_ids):
    model = build_model(family, seed=1, causal_lm=True)
    adapter, config = adapter_for(model.config), model.config
    assert adapter is ADAPTER[family]
    blocks = adapter.moe_blocks(model)
    assert [layer for layer, _ in blocks] == MOE_LAYERS[family]
    calls, inputs = record_with_inputs(model, adapter, token_ids)
    for (layer, block), x, (got,) in zip(blocks, inputs, calls):
        ids, weights, logits = expected_routing(family, config, block, x)
        got_ids, got_w = by_id(got.ids.long(), got.weights)
        want_ids, want_w = by_id(ids, weights)
        assert torch.equal(got_ids, want_ids), f"{family} layer {layer}"
        assert torch.allclose(got_w, want_w, atol=1e-6)
        assert torch.allclose(got.logits, logits, atol=1e-5)
        experts = adapter.experts(block)
        for t in range(0, x.shape[0], 4):
            for slot in range(TOP_K):
                j = int(got.ids[t, slot])
                if family == "llama4":  # the model's experts module takes every expert's (scaled) input
                    routed_in = torch.zeros(E, x.shape[-1])
                    routed_in[j] = x[t]
                    out = experts(routed_in).view(E, -1)[j]
                else:  # weight 1 on expert j and 0 on another one
                    out = experts(x[t : t + 1], torch.tensor([[j, (j + 1) % E]]), torch.tensor([[1.0, 0.0]]))
                assert torch.allclose(got.expert_norms[t, slot], out.norm(), rtol=1e-4, atol=1e-6)


# ---- group-limited plans ----------------------------------------------------------------------------------
def test_plans_keep_an_equal_budget_per_group(tmp_path, capsys):
    base_dir = build_tiny(tmp_path / "base", "deepseek_v3")
    signature = model_signature(load_config_dict(base_dir))
    assert signature.expert_groups == (2, 1)
    ranking = {"layer_0": [0, 1, 2, 3, 4, 5, 6, 7], "layer_1": [7, 3, 6, 2, 5, 1, 4, 0]}
    plan = plan_from_ranking(ranking, 4, signature, base_model=str(base_dir), domain="law", criterion="test")
    # groups {0..3} and {4..7}: the best two of each group, in ranking order (not the best four overall)
    assert plan.kept == ((0, 1, 4, 5), (2, 3, 6, 7))
    for n, message in ((5, "cannot be split equally over the 2 expert groups"), (2, "keep at least 4")):
        with pytest.raises(MoeprintError, match=message):
            plan_from_ranking(ranking, n, signature, base_model=str(base_dir), domain="law", criterion="test")
    unequal = {**plan.to_json(), "kept": [[0, 1, 2, 4], [2, 3, 6, 7]]}
    plan_file = tmp_path / "unequal.json"
    plan_file.write_text(json.dumps(unequal))
    code, err = main_in_process(capsys, "prune", base_dir, "--plan", plan_file, "--out", tmp_path / "out")
    assert_error_line(code, err, "layer 0 keeps [3, 1] experts in its 2 expert groups")
    assert not (tmp_path / "out").exists()
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with pytest.raises(MoeprintError, match="every group must keep the same number"):
        with DEEPSEEK_ADAPTER.router_mask(model, [[0, 1, 2, 4], [2, 3, 6, 7]]):
            pass
    # a plan made for a model without groups is still validated against this one's groups
    with pytest.raises(MoeprintError, match="keep at least 4"):
        validate_plan(plan.__class__(**{**plan.__dict__, "n_experts": 2, "kept": ((0, 4), (1, 5))}), signature)
    assert ExpertGroups(8, 2, 256).budget_error(16, 8).endswith("fewer than top-k=8 (n_group=8, topk_group=2).")
    # the random baseline draws N / n_group experts in every group, reproducibly
    groups = ExpertGroups(8, 4, 256)
    draw = random_kept(3, 256, 24, seed=5, groups=groups)
    assert draw == random_kept(3, 256, 24, seed=5, groups=groups) and draw != random_kept(3, 256, 24, 6, groups)
    for kept in draw:
        assert len(set(kept)) == 24 and all(sum(e // 32 == g for e in kept) == 3 for g in range(8))


# ---- exactness oracle -------------------------------------------------------------------------------------
# every on-disk layout each family's checkpoints use (Llama-4 saves fused experts in both save formats)
LAYOUTS = [(f, fused) for f in NEW_FAMILIES for fused in (False, True) if not (f == "llama4" and not fused)]


@pytest.mark.parametrize("family,fused", LAYOUTS, ids=[f"{f}-{'fused' if x else 'per-expert'}" for f, x in LAYOUTS])
def test_pruned_checkpoint_equals_masked_base(family, fused, tmp_path, token_ids):
    base_dir = build_tiny(tmp_path / "base", family, seed=2, fused=fused)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    adapter = adapter_for(base.config)
    assert adapter is ADAPTER[family]
    signature = model_signature(load_config_dict(base_dir))
    n_layers = len(MOE_LAYERS[family])
    in_memory = model_signature(base.config.to_dict())  # Qwen3.5 / Llama-4: a text config naming no architecture
    assert {k: getattr(in_memory, k) for k in ("num_layers", "num_experts", "top_k")} == {
        k: getattr(signature, k) for k in ("num_layers", "num_experts", "top_k")
    }
    with torch.no_grad():
        base_logits = base(token_ids).logits
    base_tensors = read_tensors(base_dir)
    for n in ORACLE_SIZES[family]:
        plan = plan_from_ranking(
            random_ranking(n_layers, E, seed=n), n, signature, base_model=str(base_dir), domain="law", criterion="test"
        )
        out = tmp_path / f"pruned-{n}"
        validate_plan(plan, in_memory)  # as `evaluate` checks a plan against the loaded base
        result = build_checkpoint(base_dir, plan, out, card=None, progress=False)
        pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert adapter.num_experts(pruned.config) == n and adapter.top_k(pruned.config) == min(TOP_K, n)
        with torch.no_grad():
            pruned_logits, pruned_one = pruned(token_ids).logits, pruned(token_ids[:1, :1]).logits
            with adapter.router_mask(base, plan.kept):
                masked_logits, masked_one = base(token_ids).logits, base(token_ids[:1, :1]).logits
        assert torch.equal(pruned_logits, masked_logits), f"{family} N={n}: pruned != masked base"
        assert torch.equal(pruned_one, masked_one), f"{family} N={n}: one token (a decode step) differs"
        assert torch.equal(masked_logits, base_logits) == (n == E)
        # router rows and the selection-only correction bias are sliced to the kept experts, in kept order
        for (_, block), (_, pruned_block), keep in zip(adapter.moe_blocks(base), adapter.moe_blocks(pruned), plan.kept):
            base_router, pruned_router = adapter.router(block), adapter.router(pruned_block)
            assert torch.equal(pruned_router.weight, base_router.weight[list(keep)])
            for b in adapter.router_buffers:
                kept_part = adapter.router_buffer(block, b).index_select(b.axis, torch.tensor(keep))
                assert torch.equal(adapter.router_buffer(pruned_block, b), kept_part)
        whole = _multimodal(family, out) if family in ("qwen3_5_moe", "llama4") else pruned
        assert result.n_parameters == stored_numel(whole)
        tensors = read_tensors(out)
        sliced = adapter.expert_axis_tensors(MOE_LAYERS[family])  # expert and router tensors of the MoE layers
        untouched = [k for k in base_tensors if k not in sliced and ".experts." not in k]
        assert all(torch.equal(tensors[k], base_tensors[k]) for k in untouched)  # shared experts, dense layers


def _multimodal(family, model_dir):
    import transformers

    arch = tiny_config(family).architectures[0]
    return getattr(transformers, arch).from_pretrained(model_dir, dtype=torch.float32)


@pytest.mark.parametrize(
    "family,mtp_name",
    [
        ("deepseek_v3", "model.layers.3.mlp.experts.5.gate_proj.weight"),
        ("qwen3_5_moe", "mtp.layers.0.mlp.experts.gate_up_proj"),
    ],
)
def test_multi_token_prediction_layers_are_left_out(family, mtp_name, tmp_path):
    """Hub checkpoints carry MTP modules transformers never loads (DeepSeek-V3's model.layers.61, Qwen3.5's
    mtp.*): their experts are never recorded, so a cut drops them and says so in the config."""
    from safetensors.torch import save_file

    base_dir = build_tiny(tmp_path / "base", family)
    tensors = read_tensors(base_dir)
    tensors[mtp_name] = torch.ones(E, 4)
    save_file(tensors, base_dir / "model.safetensors", metadata={"format": "pt"})
    config = load_config_dict(base_dir)
    text = config.get("text_config", config)
    key = "num_nextn_predict_layers" if family == "deepseek_v3" else "mtp_num_hidden_layers"
    text[key] = 1
    (base_dir / "config.json").write_text(json.dumps(config))
    plan = plan_from_ranking(
        random_ranking(len(MOE_LAYERS[family]), E),
        4,
        model_signature(config),
        base_model=str(base_dir),
        domain="law",
        criterion="test",
    )
    build_checkpoint(base_dir, plan, tmp_path / "out", card=None, progress=False)
    out_tensors = read_tensors(tmp_path / "out")
    assert mtp_name not in out_tensors and set(out_tensors) >= {
        k for k in tensors if ".experts." not in k and k != mtp_name
    }
    out_config = load_config_dict(tmp_path / "out")
    assert out_config.get("text_config", out_config)[key] == 0


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_oracle_in_bfloat16(family, tmp_path, token_ids):
    """In bf16 the routers' own casts matter (DeepSeek-V3 / ERNIE keep the router in float32, ERNIE casts its
    weights back to bf16): the mask must make the same casts for the equality to stay bitwise."""
    base_dir = build_tiny(tmp_path / "base", family, seed=3)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16).eval()
    adapter = adapter_for(base.config)
    n = ORACLE_SIZES[family][1]
    plan = plan_from_ranking(
        random_ranking(len(MOE_LAYERS[family]), E, seed=7),
        n,
        model_signature(load_config_dict(base_dir)),
        base_model=str(base_dir),
        domain="law",
        criterion="test",
    )
    build_checkpoint(base_dir, plan, tmp_path / "out", card=None, progress=False)
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16).eval()
    with torch.no_grad():
        with adapter.router_mask(base, plan.kept):
            masked = base(token_ids).logits
        assert torch.equal(pruned(token_ids).logits, masked), f"{family} bf16 N={n}"


@pytest.mark.slow
def test_record_plan_prune_cli_keeps_the_groups(tmp_path, capsys):
    """`moeprint record` (subprocess), `analyze`, `plan` and `prune` on a DeepSeek-V3 with 2 expert groups: the run
    records the groups, plans from it keep 2 experts per group, an impossible size is refused with one line."""
    model_dir = build_tiny(tmp_path / "ds", "deepseek_v3", tokenizer=True)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "domain": "math", "text": t}) + "\n"
            for i, t in enumerate(["one two three", "four five six seven"])
        )
    )
    run = tmp_path / "run"
    proc = run_cli("record", model_dir, "--prompts", prompts, "--out", run, "--max-new-tokens", "2")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["expert_groups"] == [2, 1] and manifest["moe_layers"] == [1, 2]
    code, err = main_in_process(capsys, "analyze", run)
    assert code == 0, err
    code, err = main_in_process(
        capsys,
        "plan",
        run,
        "--domain",
        "math",
        "--experts",
        "4",
        "--criterion",
        "frequency",
        "--out",
        tmp_path / "plan.json",
    )
    assert code == 0, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    ranking = json.loads((run / "fingerprints" / "rankings" / "frequency" / "math.json").read_text())
    for layer, kept in enumerate(plan["kept"]):  # the best two of each group, in the run's own ranking order
        ranked = ranking[f"layer_{layer}"]
        assert kept == sorted([e for e in ranked if e < 4][:2] + [e for e in ranked if e >= 4][:2])
    code, err = main_in_process(
        capsys,
        "plan",
        run,
        "--domain",
        "math",
        "--experts",
        "3",
        "--criterion",
        "frequency",
        "--out",
        tmp_path / "bad.json",
    )
    assert_error_line(code, err, "3 experts cannot be split equally over the 2 expert groups")
    assert not (tmp_path / "bad.json").exists()
    code, err = main_in_process(capsys, "prune", model_dir, "--plan", tmp_path / "plan.json", "--out", tmp_path / "out")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["n_routed_experts"] == 4


@pytest.mark.parametrize(
    "family,scale",
    [
        ("deepseek_v3", "model.layers.{layer}.mlp.experts.{e}.down_proj.weight_scale_inv"),
        ("minimax_m2", "model.layers.{layer}.block_sparse_moe.experts.{e}.w2.weight_scale_inv"),
    ],
)
def test_fp8_block_scales_follow_their_expert(family, scale, tmp_path):
    """FP8 hub checkpoints (DeepSeek-V3, MiniMax-M2) store a `weight_scale_inv` beside each expert weight: a cut
    renames a kept expert's scales with it and leaves a dropped expert's out."""
    from safetensors.torch import save_file

    base_dir = build_tiny(tmp_path / "base", family)
    tensors = read_tensors(base_dir)
    for layer in MOE_LAYERS[family]:
        for e in range(E):
            tensors[scale.format(layer=layer, e=e)] = torch.full((2, 2), float(100 * layer + e))
    save_file(tensors, base_dir / "model.safetensors", metadata={"format": "pt"})
    plan = plan_from_ranking(
        random_ranking(len(MOE_LAYERS[family]), E, seed=3),
        4,
        model_signature(load_config_dict(base_dir)),
        base_model=str(base_dir),
        domain="law",
        criterion="test",
    )
    build_checkpoint(base_dir, plan, tmp_path / "out", card=None, progress=False)
    out = read_tensors(tmp_path / "out")
    for slot, layer in enumerate(MOE_LAYERS[family]):
        for new, old in enumerate(plan.kept[slot]):
            assert torch.equal(out[scale.format(layer=layer, e=new)], torch.full((2, 2), float(100 * layer + old)))
        assert scale.format(layer=layer, e=4) not in out


def test_greedy_loss_keeps_an_equal_budget_per_group(tmp_path):
    """Group-limited greedy selection: each round drops one expert per group (every trial mask stays balanced),
    the result keeps two experts in each of the two groups, and it is never worse on the calibration batches than
    the starting ranking's per-group top-2, whose loss is computed here with a plain masked forward."""
    from moeprint.select.greedy import greedy_loss_select

    base_dir = build_tiny(tmp_path / "base", "deepseek_v3", seed=4)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 64, (2, 12), generator=gen), torch.ones(2, 12, dtype=torch.long)) for _ in range(2)]
    ranking = [[0, 1, 2, 3, 4, 5, 6, 7], [7, 3, 6, 2, 5, 1, 4, 0]]
    with pytest.raises(MoeprintError, match="cannot be split equally"):
        greedy_loss_select(model, DEEPSEEK_ADAPTER, batches, ranking, sizes=[5])
    sel = greedy_loss_select(model, DEEPSEEK_ADAPTER, batches, ranking, sizes=[6, 4], candidates=3)
    for n in (6, 4):
        for kept in sel.kept[n]:
            assert len(kept) == n and sorted(e // 4 for e in kept) == [0] * (n // 2) + [1] * (n // 2)

    def plain_loss(kept) -> float:
        total, count = 0.0, 0
        with torch.no_grad(), DEEPSEEK_ADAPTER.router_mask(model, kept):
            for ids, _ in batches:
                logits = model(input_ids=ids).logits  # (B, S, V)
                nll = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
                )
                total, count = total + float(nll), count + ids[:, 1:].numel()
        return total / count

    top2 = [[0, 1, 4, 5], [2, 3, 6, 7]]  # the best two of each group {0..3}, {4..7} in ranking order
    assert sel.initial_loss[4] == pytest.approx(plain_loss(top2), rel=1e-5)
    assert sel.loss[4] == pytest.approx(plain_loss(sel.kept[4]), rel=1e-5)
    assert sel.loss[4] <= sel.initial_loss[4] + 1e-9
