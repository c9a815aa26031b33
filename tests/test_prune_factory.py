"""Names and parameter counts follow the reference scheme; the factory makes every domain x size and resumes."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import run_cli
from moeprint.adapters import adapter_for
from moeprint.io.shards import TensorInfo, list_tensors
from moeprint.prune import count_parameters, model_name
from moeprint.prune.naming import DEFAULT_NAME_PATTERN, format_size
from moeprint.prune.surgery import output_specs
from moeprint.select.plan import model_signature, plan_from_ranking
from moeprint.testbed.synthetic import build_mxfp4_model
from prune_helpers import write_run

# Published sizes of the reference project's 29 gpt-oss-20b variants (4..32 experts), in billions.
REFERENCE_SIZES = [
    4.2,
    4.8,
    5.4,
    6.0,
    6.6,
    7.2,
    7.8,
    8.4,
    9.0,
    9.6,
    10.2,
    10.8,
    11.4,
    12.0,
    12.6,
    13.1,
    13.7,
    14.3,
    14.9,
    15.5,
    16.1,
    16.7,
    17.3,
    17.9,
    18.5,
    19.1,
    19.7,
    20.3,
    20.9,
]


def _gpt_oss_20b_mxfp4_headers() -> tuple[dict, list[TensorInfo]]:
    """The real gpt-oss-20b tensor names/shapes in its MXFP4 layout, from a meta-device model (no weights)."""
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        num_hidden_layers=24,
        num_local_experts=32,
        num_experts_per_tok=4,
        layer_types=None,
        architectures=["GptOssForCausalLM"],
    )
    with torch.device("meta"):
        model = GptOssForCausalLM(config)
    infos = []
    for name, p in model.named_parameters():
        if name.endswith(("gate_up_proj", "down_proj")):  # (E, in, out) -> blocks (E, out, in/32, 16), scales
            e, n_in, n_out = p.shape
            infos.append(TensorInfo(name + "_blocks", "U8", (e, n_out, n_in // 32, 16), "x", len(infos)))
            infos.append(TensorInfo(name + "_scales", "U8", (e, n_out, n_in // 32), "x", len(infos)))
        else:
            infos.append(TensorInfo(name, "BF16", tuple(p.shape), "x", len(infos)))
    return config.to_dict(), infos


def test_counts_reproduce_the_reference_sizes():
    config, infos = _gpt_oss_20b_mxfp4_headers()
    assert ("model.layers.0.mlp.experts.gate_up_proj_blocks", (32, 5760, 90, 16)) in [(i.name, i.shape) for i in infos]
    signature = model_signature(config)
    adapter = adapter_for(config)
    ranking = {f"layer_{i}": list(range(32)) for i in range(24)}
    sizes, names = [], []
    for n in range(4, 33):
        plan = plan_from_ranking(ranking, n, signature, base_model="openai/gpt-oss-20b", domain="law", criterion="c")
        specs = output_specs(infos, plan, adapter.expert_axis_tensors(24), "keep")
        n_params = count_parameters((s.name, s.dtype, s.shape) for s in specs)
        bf16_specs = output_specs(
            infos, plan, adapter.expert_axis_tensors(24), "bf16", layout=adapter.quantisation
        )  # dequantised: same count
        assert any(s.layout is not None for s in bf16_specs)
        assert count_parameters((s.name, s.dtype, s.shape) for s in bf16_specs) == n_params
        sizes.append(round(n_params / 1e9, 1))
        names.append(model_name(DEFAULT_NAME_PATTERN, family="gpt-oss", n_params=n_params, domain="law", n_experts=n))
    assert sizes == REFERENCE_SIZES
    assert names[4] == "gpt-oss-6.6b-specialized-law-pruned-moe-only-8-experts"  # a published model's name


def test_factory_from_a_run_resumes(tmp_path, tiny_model_dir):
    run = write_run(tmp_path / "run", tiny_model_dir)
    out = tmp_path / "ckpt"
    args = ("factory", tiny_model_dir, run, "--sizes", "2,4-5", "--criterion", "frequency", "--out", out)
    first = run_cli(*args, check=True)
    assert "6 written, 0 already complete" in first.stdout
    rows = json.loads((out / "summary.json").read_text())
    assert {(r["domain"], r["n_experts"]) for r in rows} == {(d, n) for d in ("law", "math") for n in (2, 4, 5)}
    victim = out / rows[0]["name"]
    for path in victim.iterdir():
        path.unlink()
    victim.rmdir()
    second = run_cli(*args, check=True)
    assert "1 written, 5 already complete" in second.stdout
    assert (out / "summary.csv").read_text().count("\n") == 7


@pytest.mark.slow
def test_factory_232_on_the_real_gpt_oss_20b_layout(tmp_path, shared_data):
    """8 published domains x sizes 4..32 on a 24-layer, 32-expert, top-4 MXFP4 checkpoint with a tiny hidden size."""
    from transformers import AutoModelForCausalLM

    model = build_mxfp4_model(
        tmp_path / "gpt-oss-layout",
        num_layers=24,
        num_experts=32,
        top_k=4,
        hidden_size=32,
        intermediate_size=32,
        vocab_size=300,
    )
    out = tmp_path / "factory"
    proc = run_cli(
        "factory",
        model,
        "--rankings-dir",
        shared_data / "topical_analytics",
        "--sizes",
        "4-32",
        "--out",
        out,
        "--base-model-id",
        "openai/gpt-oss-20b",
        timeout=1800,
        check=True,
    )
    assert "232 written" in proc.stdout
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == 232 and len({r["name"] for r in rows}) == 232
    pattern = re.compile(r"gpt-oss-(\d+\.\d[mkb])-specialized-([a-z_]+)-pruned-moe-only-(\d+)-experts")
    for r in rows:
        folder = out / r["name"]
        size, domain, n = pattern.fullmatch(r["name"]).groups()
        assert domain == r["domain"] and int(n) == r["n_experts"]
        config = json.loads((folder / "config.json").read_text())
        assert config["num_local_experts"] == int(n) and config["num_experts_per_tok"] == min(4, int(n))
        assert config["quantization_config"]["quant_method"] == "mxfp4"
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        tensors = list_tensors(folder)
        assert set(index["weight_map"]) == {t.name for t in tensors}
        for t in tensors:
            if ".experts." in t.name or ".router." in t.name:
                assert t.shape[0] == int(n), t.name
        # an independent count: a plain loop over the header shapes
        total = 0
        for t in tensors:
            numel = 1
            for d in t.shape:
                numel *= d
            total += 0 if t.name.endswith("_scales") else 2 * numel if t.name.endswith("_blocks") else numel
        assert total == r["n_parameters"] and size == format_size(total)
    for r in rows[:: 232 // 4]:  # full stock loads for a sample
        loaded = AutoModelForCausalLM.from_pretrained(out / r["name"], dtype=torch.float32)
        assert sum(p.numel() for p in loaded.parameters()) == r["n_parameters"]
