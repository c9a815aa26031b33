"""Expert surgery, proven exact: pruned checkpoints compute what the router-masked base computes.

Oracle: logits of the pruned checkpoint, loaded with stock AutoModelForCausalLM, equal the base model
with the plan applied as a router mask (routing from the kept router rows only), for N in {1, 2 = top_k, 3, E-1, E},
on a batch and on a single token (a decode step);
N = E reproduces the base logits exactly. MXFP4 in -> MXFP4 out keeps the kept experts' bytes, so
dequantised output equals the dequantised input's kept experts bit for bit.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from moeprint.adapters import adapter_for
from moeprint.adapters.mxfp4 import dequantize_mxfp4
from moeprint.io.shards import list_tensors
from moeprint.prune import build_checkpoint, load_masked
from moeprint.testbed.synthetic import build_mxfp4_model
from prune_helpers import make_plan, read_tensors

E, TOP_K = 8, 2
SIZES = (1, 2, 3, E - 1, E)


@pytest.fixture(scope="module")
def mxfp4_model_dir(tmp_path_factory):
    """A tiny random gpt-oss checkpoint in the original MXFP4 layout (2 layers, 8 experts, top-2)."""
    return build_mxfp4_model(tmp_path_factory.mktemp("mx") / "model", seed=1)


@pytest.fixture(scope="module")
def token_ids():
    return torch.randint(0, 400, (2, 11), generator=torch.Generator().manual_seed(0))  # (B, S)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits  # (B, S, V)


def _check_oracle(base_dir, tmp_path, ids, dtype="keep"):
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    base_logits = _logits(base, ids)
    adapter = adapter_for(base.config)
    for n in SIZES:
        plan = make_plan(base_dir, n, seed=n)
        out = tmp_path / f"{dtype}-{n}"
        result = build_checkpoint(base_dir, plan, out, dtype=dtype, card=None, progress=False)
        pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert pruned.config.num_local_experts == n and pruned.config.num_experts_per_tok == min(TOP_K, n)
        with adapter.router_mask(base, plan.kept):
            masked_logits, masked_one = _logits(base, ids), _logits(base, ids[:1, :1])
        assert torch.equal(_logits(pruned, ids), masked_logits), f"N={n}: pruned != masked base"
        assert torch.equal(_logits(pruned, ids[:1, :1]), masked_one), f"N={n}: one token (a decode step) differs"
        if n == E:
            assert torch.equal(masked_logits, base_logits)
        # the count in the name and card, against a plain count of the loaded model's parameters
        assert result.n_parameters == sum(p.numel() for p in pruned.parameters())
        record = json.loads((out / "moeprint_plan.json").read_text())
        assert record["old_to_new"] == [{str(old): new for new, old in enumerate(k)} for k in plan.kept]
    return plan


def test_fp32_pruned_equals_masked_base(tiny_model_dir, tmp_path, token_ids):
    _check_oracle(tiny_model_dir, tmp_path, token_ids)
    base, pruned = read_tensors(tiny_model_dir), read_tensors(tmp_path / f"keep-{E}")
    assert base.keys() == pruned.keys()
    # N = E keeps every expert in ascending order: every tensor is the base's, byte for byte
    assert all(torch.equal(pruned[k].view(torch.uint8), t.view(torch.uint8)) for k, t in base.items())
    small = make_plan(tiny_model_dir, 3, seed=3)
    pruned3 = read_tensors(tmp_path / "keep-3")
    for name, tensor in base.items():
        if ".experts." in name or ".router." in name:
            layer = int(name.split(".")[2])
            assert torch.equal(pruned3[name], tensor[list(small.kept[layer])]), name
        else:  # copied byte for byte
            assert pruned3[name].dtype == tensor.dtype and torch.equal(
                pruned3[name].view(torch.uint8), tensor.view(torch.uint8)
            )


def test_mxfp4_stays_mxfp4_and_is_exact(mxfp4_model_dir, tmp_path, token_ids):
    _check_oracle(mxfp4_model_dir, tmp_path, token_ids)
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    plan = make_plan(mxfp4_model_dir, 3, seed=3)
    out = tmp_path / "keep-3"
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    base, pruned = read_tensors(mxfp4_model_dir), read_tensors(out)
    assert base.keys() == pruned.keys()  # same names: *_blocks / *_scales, nothing dequantised
    stock = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for layer, kept in enumerate(plan.kept):
        for proj in ("gate_up_proj", "down_proj"):
            prefix = f"model.layers.{layer}.mlp.experts.{proj}"
            blocks, scales = pruned[prefix + "_blocks"], pruned[prefix + "_scales"]
            assert blocks.dtype == torch.uint8 and blocks.shape[0] == 3
            mine = dequantize_mxfp4(blocks, scales, torch.float32)  # (3, in, out)
            kept_in = dequantize_mxfp4(base[prefix + "_blocks"], base[prefix + "_scales"], torch.float32)[list(kept)]
            assert torch.equal(mine.view(torch.int32), kept_in.view(torch.int32))  # bit for bit
            # our dequantiser agrees with transformers' own, and stock loading used exactly these values
            reference = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
            assert torch.equal(mine.view(torch.int32), reference.view(torch.int32))
            loaded = getattr(stock.model.layers[layer].mlp.experts, proj)
            assert torch.equal(loaded.detach(), mine)


def test_mxfp4_to_bf16(mxfp4_model_dir, tmp_path, token_ids):
    plan = make_plan(mxfp4_model_dir, 3, seed=3)
    out = tmp_path / "bf16"
    build_checkpoint(mxfp4_model_dir, plan, out, dtype="bf16", card=None, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    base, pruned = read_tensors(mxfp4_model_dir), read_tensors(out)
    assert not any(name.endswith(("_blocks", "_scales")) for name in pruned)
    for layer, kept in enumerate(plan.kept):
        name = f"model.layers.{layer}.mlp.experts.gate_up_proj"
        expected = dequantize_mxfp4(base[name + "_blocks"], base[name + "_scales"], torch.bfloat16)[list(kept)]
        assert pruned[name].dtype == torch.bfloat16 and torch.equal(pruned[name], expected)
    base_model = AutoModelForCausalLM.from_pretrained(mxfp4_model_dir, dtype=torch.float32).eval()
    with adapter_for(base_model.config).router_mask(base_model, plan.kept):
        masked = _logits(base_model, token_ids)
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert torch.equal(_logits(loaded, token_ids), masked)


def test_sharded_output_and_load_masked(tiny_model_dir, tmp_path, token_ids):
    plan = make_plan(tiny_model_dir, 5, seed=5)
    out = tmp_path / "sharded"
    result = build_checkpoint(tiny_model_dir, plan, out, shard_size=40_000, card=None, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert result.n_shards == len(shards) > 2
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    sizes, counts = {}, {}
    for info in list_tensors(out):
        sizes[info.shard] = sizes.get(info.shard, 0) + info.nbytes
        counts[info.shard] = counts.get(info.shard, 0) + 1
    assert all(size <= 40_000 or counts[shard] == 1 for shard, size in sizes.items())  # one big tensor may overflow
    assert index["metadata"]["total_size"] == sum(sizes.values()) == result.n_bytes
    pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    masked = load_masked(tiny_model_dir, plan)  # the library path the evaluate stage uses
    assert torch.equal(_logits(pruned, token_ids), _logits(masked, token_ids))
    masked.moeprint_unmask()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert torch.equal(_logits(masked, token_ids), _logits(base, token_ids))
