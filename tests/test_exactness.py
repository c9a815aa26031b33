"""The exactness oracle at gpt-oss-20b's real dimensions: a pruned checkpoint equals the masked base bit for bit.

At hidden size 2880 a router product over all 32 experts, sliced to the kept columns, differs from the product
over the kept rows alone in the last bits on common CPUs (float32 kernels block by matrix shape). The mask routes
from the kept rows only, so the equality below must hold on every machine, not by luck of one CPU's kernels.
The tiny-model oracles live in test_prune_surgery.py (gpt-oss) and test_architectures.py (other families).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from moeprint.adapters import adapter_for
from moeprint.prune import build_checkpoint
from moeprint.testbed.tiny import build_tiny_model
from prune_helpers import make_plan, read_tensors

HIDDEN, INTERMEDIATE, E, TOP_K = 2880, 2880, 32, 4  # gpt-oss-20b's hidden and expert sizes, expert count, top-k


@pytest.fixture(scope="module")
def real_dims_dir(tmp_path_factory):
    """One decoder layer with gpt-oss-20b's MoE dimensions and random fp32 weights (~3.3 GB on disk)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("real-dims") / "model",
        num_layers=1,
        num_experts=E,
        top_k=TOP_K,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        seed=3,
    )


@pytest.mark.slow
def test_real_dimension_pruned_equals_masked_base(real_dims_dir, tmp_path):
    # a batch as in prefill, and a single token as in every decode step (T = 1 takes other kernels)
    ids = torch.randint(0, 400, (2, 13), generator=torch.Generator().manual_seed(1))  # (B, S)
    one = ids[:1, :1]  # (1, 1)
    base = AutoModelForCausalLM.from_pretrained(real_dims_dir, dtype=torch.float32).eval()
    adapter = adapter_for(base.config)
    with torch.no_grad():
        base_logits = base(ids).logits  # (B, S, V)
        base_one = base(one).logits  # (1, 1, V)
    base_tensors = read_tensors(real_dims_dir)
    for n in (1, 2, TOP_K, E - 1, E):
        plan = make_plan(real_dims_dir, n, seed=n)
        out = tmp_path / f"pruned-{n}"
        build_checkpoint(real_dims_dir, plan, out, card=None, progress=False)
        pruned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        with torch.no_grad():
            pruned_logits, pruned_one = pruned(ids).logits, pruned(one).logits
            with adapter.router_mask(base, plan.kept):
                masked_logits, masked_one = base(ids).logits, base(one).logits
        assert torch.equal(pruned_logits, masked_logits), (
            f"N={n}: max |diff| {(pruned_logits - masked_logits).abs().max()}"
        )
        assert torch.equal(pruned_one, masked_one), (
            f"N={n}, one token: max |diff| {(pruned_one - masked_one).abs().max()}"
        )
        assert torch.equal(masked_logits, base_logits) == (n == E)
        assert n < E or torch.equal(masked_one, base_one)
        # the written expert tensors are the kept experts' bytes
        written = read_tensors(out)
        for name in ("model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.router.weight"):
            assert torch.equal(written[name], base_tensors[name][list(plan.kept[0])])
        del pruned, written
