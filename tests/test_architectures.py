"""Mixtral, Qwen3-MoE and OLMoE: config reading, recording, masking and pruning, each against an
independent computation.

- config: every adapter reads a programmatic tiny config (and the hub's / transformers' dict spellings);
- recording: captured ids/weights/logits equal softmax -> top-k -> (renormalise) recomputed by hand from
  each MoE block's input and the router weight; expert norms equal the model's own experts module;
- masking: the re-routing hook equals a softmax over all experts with the dropped logits at -inf
  (its logits come from the kept router rows alone, so they match the full product to rounding);
- exactness oracle: a pruned checkpoint loaded with stock AutoModelForCausalLM computes the same logits
  as the masked base, bit for bit, for N in {1, top_k, E-1, E}, in the per-expert on-disk layout that
  `save_pretrained` writes and in the fused layout; N = E equals the unmasked base.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from arch_helpers import FAMILIES, TOP_K, E, build_tiny, record_with_inputs, tiny_config
from conftest import run_cli
from moeprint.adapters import adapter_for, load_config_dict
from moeprint.adapters.mixtral import MIXTRAL
from moeprint.adapters.olmoe import OLMOE
from moeprint.adapters.qwen3_moe import QWEN3_MOE
from moeprint.errors import MoeprintError
from moeprint.io.shards import list_tensors
from moeprint.prune import build_checkpoint
from moeprint.record.hooks import RouterHooks
from moeprint.select.plan import model_signature, plan_from_ranking
from prune_helpers import assert_error_line, main_in_process, random_ranking, read_tensors

ADAPTER = {"mixtral": MIXTRAL, "qwen3_moe": QWEN3_MOE, "olmoe": OLMOE}
MOE_LAYERS = {"mixtral": [0, 1], "qwen3_moe": [0, 2], "olmoe": [0, 1]}
RENORMALISED = {"mixtral": True, "qwen3_moe": True, "olmoe": False}  # as tiny_config sets them


@pytest.fixture(scope="module")
def token_ids():
    return torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))  # (B, S)


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(tiny_config(request.param), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.normal_(0.0, 0.5)
    return request.param, model


# ---- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_reads_tiny_config(family):
    config = tiny_config(family)
    adapter = adapter_for(config)
    assert adapter is ADAPTER[family]
    assert adapter.moe_layers(config) == MOE_LAYERS[family]
    assert (adapter.num_layers(config), adapter.num_experts(config), adapter.top_k(config)) == (2, E, TOP_K)
    options = {kw: config.to_dict()[key] for kw, key, _ in adapter.routing_options}
    assert options == ({} if family == "mixtral" else {"normalize": RENORMALISED[family]})  # Mixtral: always
    # the dict as transformers 5.23 writes it, and (Qwen3/OLMoE) the hub's `num_experts` spelling
    saved = config.to_dict()
    assert adapter_for(saved).num_experts(saved) == E and adapter.moe_layers(saved) == MOE_LAYERS[family]
    hub = {k: v for k, v in saved.items() if k not in ("num_experts", "num_local_experts")}
    hub[adapter.num_experts_key] = E
    assert adapter.num_experts(hub) == E
    pruned = adapter.pruned_config(saved, 1)
    assert adapter.num_experts(pruned) == 1 and pruned["num_experts_per_tok"] == 1
    assert all(pruned[k] == 1 for k in (adapter.num_experts_key, *adapter.num_experts_aliases) if k in saved)
    # tensor names: fused and router names per MoE layer (slot = index among MoE layers), per-expert names
    last = MOE_LAYERS[family][-1]
    axes = adapter.expert_axis_tensors(adapter.moe_layers(config))
    assert axes[f"model.layers.{last}.mlp.experts.gate_up_proj"] == (1, 0)
    assert axes[f"model.layers.{last}.mlp.gate.weight"] == (1, 0)
    assert not any(".layers.1." in name for name in axes) or family != "qwen3_moe"  # the dense layer has none
    per_expert = adapter.per_expert_tensor_names(adapter.moe_layers(config), E)
    assert len(per_expert) == 2 * E * 3
    name = next(n for n in per_expert if f".{last}." in n and ".experts.5." in n)
    assert (per_expert[name].slot, per_expert[name].expert) == (1, 5)
    assert per_expert[name].renamed(2) == name.replace(".experts.5.", ".experts.2.")


def test_dense_layers_are_not_moe_layers():
    config = tiny_config("qwen3_moe").to_dict()
    assert QWEN3_MOE.moe_layers({**config, "mlp_only_layers": [], "decoder_sparse_step": 2}) == [1]
    assert QWEN3_MOE.moe_layers({**config, "mlp_only_layers": [0, 1, 2]}) == []
    with pytest.raises(MoeprintError, match="Mixture-of-Experts"):
        adapter_for({"architectures": ["OlmoeForCausalLM"], "num_hidden_layers": 2})


# ---- recording --------------------------------------------------------------------------------------
def _plain_routing(model, adapter, x, block, renormalise):
    """Router math by hand from the block input x (T,H): logits, softmax over all, top-k, renormalise."""
    logits = x @ adapter.router(block).weight.T  # (T, E)
    probs = torch.exp(logits - logits.max(-1, keepdim=True).values)
    probs = probs / probs.sum(-1, keepdim=True)  # (T, E)
    top = probs.sort(dim=-1, descending=True)
    ids, weights = top.indices[:, :TOP_K], top.values[:, :TOP_K]  # (T, k)
    if renormalise:
        weights = weights / weights.sum(-1, keepdim=True)
    return ids, weights, logits


def test_recorded_routing_equals_router_math(family_model, token_ids):
    family, model = family_model
    adapter = adapter_for(model.config)
    blocks = adapter.moe_blocks(model)
    assert [layer for layer, _ in blocks] == MOE_LAYERS[family]
    calls, inputs = record_with_inputs(model, adapter, token_ids)
    for (_, block), x, layer_calls in zip(blocks, inputs, calls):
        (got,) = layer_calls  # one forward call
        ids, weights, logits = _plain_routing(model, adapter, x, block, RENORMALISED[family])
        assert torch.equal(got.ids.long(), ids)
        assert torch.allclose(got.weights, weights, atol=1e-6)
        assert torch.allclose(got.logits, logits, atol=1e-5)
        experts = adapter.experts(block)
        for t in range(0, x.shape[0], 5):
            for slot in range(TOP_K):
                j = int(ids[t, slot])
                # the model's own experts module, weight 1 on expert j and 0 on another one
                out = experts(x[t : t + 1], torch.tensor([[j, (j + 1) % E]]), torch.tensor([[1.0, 0.0]]))
                assert torch.allclose(got.expert_norms[t, slot], out.norm(), rtol=1e-4, atol=1e-6)


def test_router_mask_equals_minus_inf_logits_and_is_removed(family_model, token_ids):
    family, model = family_model
    adapter = adapter_for(model.config)
    blocks = adapter.moe_blocks(model)
    kept = [[0, 3, 6], [1, 2, 4, 5, 7]]
    with torch.no_grad():
        before = model(token_ids).logits
    seen = []
    capture = RouterHooks(model, adapter).attach()  # attached before the mask: must still see masked routing
    with adapter.router_mask(model, kept), torch.no_grad():
        # registered after the mask's hooks, so these see what the experts get: the masked routing
        spies = [adapter.router(b).register_forward_hook(lambda m, a, o: seen.append((a[0], o))) for _, b in blocks]
        masked_out = model(token_ids).logits
    for h in spies:
        h.remove()
    capture.remove()
    for (_, (_, _, ids)), (recorded,) in zip(seen, capture.take()):
        assert torch.equal(recorded.ids.long(), ids)
    for keep, (_, block), (x, (logits_m, weights, ids)) in zip(kept, blocks, seen):
        plain = x.reshape(-1, x.shape[-1]) @ adapter.router(block).weight.T  # (T, E), independent of the router
        dropped = [e for e in range(E) if e not in keep]
        minus_inf = plain.clone()
        minus_inf[:, dropped] = float("-inf")
        probs = torch.softmax(minus_inf, -1)  # softmax over all experts, dropped at -inf
        top = probs.topk(TOP_K, dim=-1)
        expect_w = top.values / top.values.sum(-1, keepdim=True) if RENORMALISED[family] else top.values
        assert torch.equal(ids, top.indices) and set(ids.unique().tolist()) <= set(keep)
        assert torch.allclose(weights.float(), expect_w, atol=1e-6)
        # the kept logits come from the kept rows alone: equal to the full product up to float32 rounding
        assert torch.isneginf(logits_m[:, dropped]).all()
        torch.testing.assert_close(logits_m[:, keep], plain[:, keep], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(token_ids).logits, before)  # the mask left nothing behind
    assert not torch.equal(masked_out, before)


# ---- exactness oracle -------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True], ids=["per-expert", "fused"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_checkpoint_equals_masked_base(family, fused, tmp_path, token_ids):
    base_dir = build_tiny(tmp_path / "base", family, seed=2, fused=fused)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    adapter = adapter_for(base.config)
    signature = model_signature(load_config_dict(base_dir))
    assert signature.num_layers == 2  # MoE layers only
    with torch.no_grad():
        base_logits = base(token_ids).logits
    base_tensors = read_tensors(base_dir)
    for n in (1, TOP_K, E - 1, E):
        plan = plan_from_ranking(
            random_ranking(2, E, seed=n), n, signature, base_model=str(base_dir), domain="law", criterion="test"
        )
        out = tmp_path / f"pruned-{n}"
        result = build_checkpoint(base_dir, plan, out, card=None, progress=False)
        pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert adapter.num_experts(pruned.config) == n and pruned.config.num_experts_per_tok == min(TOP_K, n)
        with torch.no_grad():
            pruned_logits, pruned_one = pruned(token_ids).logits, pruned(token_ids[:1, :1]).logits
            with adapter.router_mask(base, plan.kept):
                masked_logits, masked_one = base(token_ids).logits, base(token_ids[:1, :1]).logits
        assert torch.equal(pruned_logits, masked_logits), f"{family} N={n}: pruned != masked base"
        assert torch.equal(pruned_one, masked_one), f"{family} N={n}: one token (a decode step) differs"
        if n == E:
            assert torch.equal(masked_logits, base_logits)
        else:
            assert not torch.equal(masked_logits, base_logits)
        assert result.n_parameters == sum(p.numel() for p in pruned.parameters())
        # on disk: new expert j holds base expert kept[j] (names renumbered, rows sliced), the rest is copied
        tensors = read_tensors(out)
        for slot, layer in enumerate(MOE_LAYERS[family]):
            for new, old in enumerate(plan.kept[slot]):
                if fused:
                    name = f"model.layers.{layer}.mlp.experts.gate_up_proj"
                    assert torch.equal(tensors[name][new], base_tensors[name][old])
                else:
                    new_names = [k for k in tensors if f"layers.{layer}." in k and f".experts.{new}." in k]
                    assert len(new_names) == 3
                    for k in new_names:
                        assert torch.equal(tensors[k], base_tensors[k.replace(f".experts.{new}.", f".experts.{old}.")])
            assert not any(f"layers.{layer}." in k and f".experts.{n}." in k for k in tensors)
        untouched = [k for k in base_tensors if ".experts." not in k and ".gate.weight" not in k]
        assert all(torch.equal(tensors[k], base_tensors[k]) for k in untouched)


def test_checkpoint_with_missing_experts_is_refused(tmp_path):
    base_dir = build_tiny(tmp_path / "base", "olmoe")
    tensors = read_tensors(base_dir)
    del tensors["model.layers.1.mlp.experts.7.gate_proj.weight"]
    save_file(tensors, base_dir / "model.safetensors", metadata={"format": "pt"})
    plan = make_plan_for(base_dir, 4)
    with pytest.raises(MoeprintError, match="has 7 experts in layer 1"):
        build_checkpoint(base_dir, plan, tmp_path / "out", card=None, progress=False)
    assert not (tmp_path / "out").exists()


def make_plan_for(model_dir, n):
    signature = model_signature(load_config_dict(model_dir))
    return plan_from_ranking(
        random_ranking(signature.num_layers, E),
        n,
        signature,
        base_model=str(model_dir),
        domain="law",
        criterion="test",
    )


# ---- through the real entry point -------------------------------------------------------------------
def test_record_and_prune_cli_on_qwen3_with_a_dense_layer(tmp_path, capsys):
    """`moeprint record` (subprocess) then `moeprint prune` (in process) on a Qwen3-MoE whose middle layer is dense."""
    model_dir = build_tiny(tmp_path / "qwen", "qwen3_moe", tokenizer=True)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "a", "domain": "math", "text": "one two three"}) + "\n")
    run = tmp_path / "run"
    proc = run_cli("record", model_dir, "--prompts", prompts, "--out", run, "--max-new-tokens", "3")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["num_layers"] == 2 and manifest["moe_layers"] == [0, 2] and manifest["num_experts"] == E
    rows = pq.ParquetDataset(str(run / "traces")).read().to_pylist()
    assert rows and all(len(r["ids"]) == 2 * TOP_K for r in rows)
    # the recorded routing of the prompt equals the router math of a plain forward
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    blocks = QWEN3_MOE.moe_blocks(model)
    inputs = []
    pre = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].reshape(-1, a[0].shape[-1]))) for _, b in blocks]
    rows.sort(key=lambda r: r["position"])
    with torch.no_grad():
        model(torch.tensor([[r["token_id"] for r in rows]]))
    for h in pre:
        h.remove()
    for slot, ((_, block), x) in enumerate(zip(blocks, inputs)):
        ids, weights, _ = _plain_routing(model, QWEN3_MOE, x, block, renormalise=True)
        got_ids = torch.tensor([r["ids"][slot * TOP_K : (slot + 1) * TOP_K] for r in rows])
        got_w = torch.tensor([r["weights"][slot * TOP_K : (slot + 1) * TOP_K] for r in rows], dtype=torch.float32)
        assert torch.equal(got_ids.long(), ids)
        assert torch.allclose(got_w, weights, atol=1e-3)  # weights are stored as float16
    # a plan over the 2 MoE layers prunes the checkpoint; the dense layer is copied
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(make_plan_for(model_dir, 3).to_json()))
    out = tmp_path / "pruned"
    code, err = main_in_process(capsys, "prune", model_dir, "--plan", plan_file, "--out", out)
    assert code == 0, err
    pruned = json.loads((out / "config.json").read_text())
    assert QWEN3_MOE.num_experts(pruned) == 3 and pruned["mlp_only_layers"] == [1]
    assert "model.layers.1.mlp.gate_proj.weight" in {t.name for t in list_tensors(out)}
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text(json.dumps({**make_plan_for(model_dir, 3).to_json(), "kept": [[0, 1, 2]] * 3}))
    code, err = main_in_process(capsys, "prune", model_dir, "--plan", bad_plan, "--out", tmp_path / "bad-out")
    assert_error_line(code, err, "covers 3 layers, but the model has 2 MoE layers")
    assert not (tmp_path / "bad-out").exists()
