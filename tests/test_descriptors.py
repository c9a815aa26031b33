"""Each adapter's descriptors from a programmatic config: quantised layout (suffixes, codec, parameter counts),
chat format, known checkpoints. The codec is checked against a dequantisation written here from the format's
definition (OCP MX: FP4 e2m1 codes, two per byte low nibble first, one E8M0 scale per 32 values)."""

from __future__ import annotations

import math

import pytest
import torch

from arch_helpers import FAMILIES as OLD_FAMILIES
from arch_helpers import tiny_config as old_tiny_config
from family_helpers import NEW_FAMILIES
from family_helpers import tiny_config as new_tiny_config
from moeprint.adapters import ADAPTERS, QUANT_LAYOUTS, adapter_for, chat_format_for_vocab, quantisation_for
from moeprint.io.shards import DTYPE_CODES
from moeprint.prune.naming import count_parameters
from moeprint.testbed.standin import HARMONY_SPECIAL_TOKENS, gpt_oss_20b_config
from moeprint.testbed.synthetic import shapes_of, to_mxfp4_checkpoint
from moeprint.testbed.tiny import build_tiny_model, tiny_gpt_oss_config

E2M1 = {0: 0.0, 1: 0.5, 2: 1.0, 3: 1.5, 4: 2.0, 5: 3.0, 6: 4.0, 7: 6.0}  # magnitude codes; bit 3 is the sign


def by_hand_dequantise(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(E, out, G, 16) uint8 + (E, out, G) uint8 -> (E, G*32, out) float64, one value at a time."""
    n_e, n_out, n_g, _ = blocks.shape
    out = torch.zeros(n_e, n_g * 32, n_out, dtype=torch.float64)
    for e in range(n_e):
        for r in range(n_out):
            for g in range(n_g):
                scale = 2.0 ** (int(scales[e, r, g]) - 127)
                for b in range(16):
                    byte = int(blocks[e, r, g, b])
                    for half, code in enumerate((byte & 0xF, byte >> 4)):  # low nibble is the earlier value
                        value = E2M1[code & 7] * (-1.0 if code & 8 else 1.0)
                        out[e, g * 32 + 2 * b + half, r] = value * scale
    return out


def family_configs():
    """(family, programmatic config) for every registered family."""
    yield "gpt_oss", tiny_gpt_oss_config(vocab_size=64)
    for family in OLD_FAMILIES:
        yield family, old_tiny_config(family)
    for family in NEW_FAMILIES:
        yield family, new_tiny_config(family)


CONFIGS = dict(family_configs())


def test_every_registered_family_is_covered():
    assert {a.name for a in ADAPTERS.values()} == set(CONFIGS)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_float_parameter_counts_are_unchanged(family):
    """No float tensor of any family looks quantised to the counter: the count is the plain sum of numels."""
    config = CONFIGS[family]
    adapter = adapter_for(config)
    assert adapter.name == family
    import transformers

    model_class = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        model = model_class._from_config(config)
    triples = [(n, DTYPE_CODES[t.dtype], tuple(t.shape)) for n, t in model.state_dict().items()]
    expected = sum(math.prod(shape) for _, _, shape in triples)
    assert count_parameters(triples, adapter.quantisation) == expected
    assert count_parameters(triples) == expected  # every declared layout tried
    if adapter.quantisation is None:  # no suffixed variants among the tensors a cut slices
        suffixes = tuple(s for q in QUANT_LAYOUTS for s in q.suffixes)
        assert adapter.quantized_expert_suffixes == ()
        assert not [n for n in adapter.expert_axis_tensors(adapter.moe_layers(config)) if n.endswith(suffixes)]
        assert adapter.chat_format is None and adapter.checkpoints == ()


def test_gpt_oss_declares_mxfp4_and_harmony():
    adapter = adapter_for(tiny_gpt_oss_config(vocab_size=64))
    layout = adapter.quantisation
    assert layout is not None and QUANT_LAYOUTS == (layout,)
    assert adapter.quantized_expert_suffixes == ("_blocks", "_scales") and layout.quant_method == "mxfp4"
    axes = adapter.expert_axis_tensors(2)
    assert axes["model.layers.1.mlp.experts.gate_up_proj_blocks"] == (1, 0)
    assert axes["model.layers.0.mlp.experts.down_proj_scales"] == (0, 0)
    assert layout.float_name("a.down_proj_blocks") == "a.down_proj" and layout.float_name("a.down_proj") is None
    assert layout.scales_name("a.down_proj_blocks") == "a.down_proj_scales"
    # the config the published checkpoint carries describes the layout; a float or other config does not
    published = gpt_oss_20b_config()
    assert layout.describes(published) and quantisation_for(published) is layout
    assert quantisation_for({"quantization_config": {"quant_method": "fp8"}}) is None
    assert layout.quantization_config() == published["quantization_config"] | {"quant_method": "mxfp4"}
    # the tokenizer's special tokens hold every harmony marker; a vocabulary without them has no chat format
    chat = adapter.chat_format
    assert set(chat.special_tokens) <= set(HARMONY_SPECIAL_TOKENS)
    assert chat_format_for_vocab({t: i for i, t in enumerate(HARMONY_SPECIAL_TOKENS)}) is chat
    assert chat_format_for_vocab({"<|end|>": 0, "a": 1}) is None
    # the declared 20b is the published config's shape
    (c20,) = [c for c in adapter.checkpoints if c.hub_id.endswith("-20b")]
    shape = (adapter.num_layers(published), adapter.num_experts(published), adapter.top_k(published))
    assert (c20.num_layers, c20.num_experts, c20.top_k) == shape == (24, 32, 4)


def test_mxfp4_codec_matches_the_format_definition():
    layout = adapter_for(tiny_gpt_oss_config(vocab_size=64)).quantisation
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (2, 3, 2, 16), dtype=torch.uint8, generator=g)  # (E, out, G, 16)
    scales = torch.randint(120, 134, (2, 3, 2), dtype=torch.uint8, generator=g)  # (E, out, G)
    decoded = layout.decode(blocks, scales, torch.float32)  # (E, in, out)
    assert decoded.shape == layout.decoded_shape(tuple(blocks.shape)) == (2, 64, 3)
    assert torch.equal(decoded.double(), by_hand_dequantise(blocks, scales))
    # encode inverts decode on representable weights
    data, scales_again = layout.encode(decoded)
    assert torch.equal(layout.decode(data, scales_again, torch.float32), decoded)
    # a weight off the grid comes back within half a grid step of its block (the step is at most 2 * scale)
    w = torch.randn(2, 64, 3, generator=g)  # (E, in, out)
    back = layout.decode(*layout.encode(w), torch.float32)
    block_max = w.abs().reshape(2, 2, 32, 3).amax(dim=2, keepdim=True)  # (E, G, 1, out)
    step = 2.0 * torch.exp2(torch.ceil(torch.log2(block_max / 6.0)))
    assert ((back - w).abs().reshape(2, 2, 32, 3) <= step / 2 + 1e-7).all()


def test_mxfp4_parameter_count_equals_the_float_model(tmp_path):
    """A quantised checkpoint counts the parameters of the float model it encodes (torch's own count)."""
    float_dir = build_tiny_model(tmp_path / "float", hidden_size=64, intermediate_size=32)
    quantised = to_mxfp4_checkpoint(float_dir, tmp_path / "mxfp4")
    names = [n for n, _, _ in shapes_of(quantised)]
    assert any(n.endswith("_blocks") for n in names) and any(n.endswith("_scales") for n in names)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(float_dir, use_safetensors=True)
    expected = sum(p.numel() for p in model.parameters())
    layout = adapter_for(model.config).quantisation
    assert count_parameters(shapes_of(quantised), layout) == count_parameters(shapes_of(float_dir)) == expected
