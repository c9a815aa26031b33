"""A real-format gpt-oss-20b stand-in, built offline: the published config with fewer layers, random
weights under the published tensor names, dtypes, MXFP4 shapes and shard naming, the o200k_harmony
tokenizer and a harmony chat template written here.

- Weights: at 24 layers the tensor names are those of the published index and add up to exactly its
  total_size (13,761,264,768 bytes); each tensor lies in the shard the published index puts it in.
- Sources: config.json, generation_config.json, model.safetensors.index.json, tokenizer_config.json and
  special_tokens_map.json of openai/gpt-oss-20b, as reproduced in the public repository
  MaximeRivest/moereport (tmp.md); tests/test_standin.py checks the values taken from them.
- Tokenizer: the o200k ranks that the npm package js-tiktoken ships, expanded to tiktoken's file format
  and checked against the sha256 tiktoken expects; converted with transformers' TikTokenConverter, plus
  the 21 harmony special tokens at ids 199998-200018.
- Chat template: renders what the pip package openai-harmony renders (the tests compare token for token),
  reading the date from `strftime_now` like the published template (moeprint fixes it per run).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from moeprint.errors import MoeprintError

NUM_LAYERS_20B = 24
HIDDEN, INTERMEDIATE, EXPERTS, VOCAB, Q_DIM, KV_DIM, HEADS = 2880, 2880, 32, 201088, 4096, 512, 64
PUBLISHED_TOTAL_SIZE_20B = 13_761_264_768
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"  # tiktoken's expected_hash
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_RESERVED = {200000, 200001, 200004, 200009, 200010, 200011, 200013, 200014, 200015, 200016, 200017}
_NAMED = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
    200018: "<|endofprompt|>",
}
HARMONY_SPECIAL_TOKENS = [_NAMED.get(i, f"<|reserved_{i}|>") for i in range(199998, 200019)]
assert len(HARMONY_SPECIAL_TOKENS) == 21 and set(range(199998, 200019)) - set(_NAMED) == _RESERVED

# Written for this project from the harmony format (checked against openai-harmony by the tests).
HARMONY_CHAT_TEMPLATE = (
    "{%- set effort = reasoning_effort if reasoning_effort is defined and reasoning_effort else 'medium' -%}"
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: {{ strftime_now('%Y-%m-%d') }}\n\n"
    "Reasoning: {{ effort }}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "{%- set rest = messages -%}"
    "{%- if messages and messages[0]['role'] in ('system', 'developer') -%}"
    "<|start|>developer<|message|># Instructions\n\n{{ messages[0]['content'] }}<|end|>"
    "{%- set rest = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for m in rest -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "<|start|>assistant<|channel|>final<|message|>{{ m['content'] }}<|end|>"
    "{%- else -%}"
    "<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"
)


def gpt_oss_20b_config(num_layers: int = NUM_LAYERS_20B) -> dict:
    """The published gpt-oss-20b config.json; only num_hidden_layers and layer_types shortened."""
    return {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": 200002,
        "experts_per_token": 4,
        "head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initial_context_length": 4096,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_types": [("sliding_attention", "full_attention")[i % 2] for i in range(num_layers)],
        "max_position_embeddings": 131072,
        "model_type": "gpt_oss",
        "num_attention_heads": HEADS,
        "num_experts_per_tok": 4,
        "num_hidden_layers": num_layers,
        "num_key_value_heads": 8,
        "num_local_experts": EXPERTS,
        "output_router_logits": False,
        "pad_token_id": 199999,
        "quantization_config": {
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
            "quant_method": "mxfp4",
        },
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "rope_type": "yarn",
            "truncate": False,
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": 128,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "transformers_version": "4.55.0.dev0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


GENERATION_CONFIG = {
    "bos_token_id": 199998,
    "do_sample": True,
    "eos_token_id": [200002, 199999, 200012],
    "pad_token_id": 199999,
    "transformers_version": "4.55.0.dev0",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "bf16" | "u8"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 2 if self.dtype == "bf16" else 1
        for d in self.shape:
            n *= d
        return n


def standin_tensor_specs(num_layers: int) -> list[TensorSpec]:
    """Every tensor of the published checkpoint, layers 0..num_layers-1 (MXFP4 experts: blocks and scales uint8)."""
    specs = [
        TensorSpec("model.embed_tokens.weight", "bf16", (VOCAB, HIDDEN)),
        TensorSpec("model.norm.weight", "bf16", (HIDDEN,)),
        TensorSpec("lm_head.weight", "bf16", (VOCAB, HIDDEN)),
    ]
    g_in, g_mid = HIDDEN // 32, INTERMEDIATE // 32  # MXFP4 groups of 32 values along each matrix's input axis
    for i in range(num_layers):
        p = f"model.layers.{i}"
        specs += [  # in the order of the published index, which its two split layers depend on
            TensorSpec(f"{p}.input_layernorm.weight", "bf16", (HIDDEN,)),
            TensorSpec(f"{p}.self_attn.o_proj.bias", "bf16", (HIDDEN,)),
            TensorSpec(f"{p}.self_attn.o_proj.weight", "bf16", (HIDDEN, Q_DIM)),
            TensorSpec(f"{p}.self_attn.q_proj.bias", "bf16", (Q_DIM,)),
            TensorSpec(f"{p}.self_attn.k_proj.bias", "bf16", (KV_DIM,)),
            TensorSpec(f"{p}.self_attn.v_proj.bias", "bf16", (KV_DIM,)),
            TensorSpec(f"{p}.self_attn.q_proj.weight", "bf16", (Q_DIM, HIDDEN)),
            TensorSpec(f"{p}.self_attn.k_proj.weight", "bf16", (KV_DIM, HIDDEN)),
            TensorSpec(f"{p}.self_attn.v_proj.weight", "bf16", (KV_DIM, HIDDEN)),
            TensorSpec(f"{p}.self_attn.sinks", "bf16", (HEADS,)),
            TensorSpec(f"{p}.mlp.router.bias", "bf16", (EXPERTS,)),
            TensorSpec(f"{p}.mlp.router.weight", "bf16", (EXPERTS, HIDDEN)),
            TensorSpec(f"{p}.mlp.experts.gate_up_proj_bias", "bf16", (EXPERTS, 2 * INTERMEDIATE)),
            TensorSpec(f"{p}.mlp.experts.gate_up_proj_blocks", "u8", (EXPERTS, 2 * INTERMEDIATE, g_in, 16)),
            TensorSpec(f"{p}.mlp.experts.gate_up_proj_scales", "u8", (EXPERTS, 2 * INTERMEDIATE, g_in)),
            TensorSpec(f"{p}.mlp.experts.down_proj_bias", "bf16", (EXPERTS, HIDDEN)),
            TensorSpec(f"{p}.mlp.experts.down_proj_blocks", "u8", (EXPERTS, HIDDEN, g_mid, 16)),
            TensorSpec(f"{p}.mlp.experts.down_proj_scales", "u8", (EXPERTS, HIDDEN, g_mid)),
            TensorSpec(f"{p}.post_attention_layernorm.weight", "bf16", (HIDDEN,)),
        ]
    return specs


def _random(spec: TensorSpec, g):
    import torch

    if spec.dtype == "u8":
        if spec.name.endswith("_scales"):  # E8M0 exponents 2^-8..2^-5 (bias 127): small, finite weights
            return torch.randint(119, 123, spec.shape, dtype=torch.uint8, generator=g)
        return torch.randint(0, 256, spec.shape, dtype=torch.uint8, generator=g)  # two FP4 codes per byte
    if spec.name.endswith("norm.weight"):
        return torch.ones(spec.shape, dtype=torch.bfloat16)
    # uniform with std 0.02, drawn in bf16 directly: no float32 copy of the 1.2 GB embeddings
    return torch.empty(spec.shape, dtype=torch.bfloat16).uniform_(-0.0346, 0.0346, generator=g)


# The published index fills its three shards in the lexicographic order of the names (layers 0, 1, 10..19, 2,
# 20..23, 3..9, then lm_head, embed_tokens, norm): the shard of each layer, and for the two layers cut between
# shards, how many of their tensors (in `standin_tensor_specs` order) go into the earlier shard.
_LAYER_SHARD = {**dict.fromkeys((0, 1, *range(10, 18)), 0), **dict.fromkeys((2, 3, 4, 5, *range(19, 24)), 1)}
_LAYER_SHARD.update(dict.fromkeys((7, 8, 9), 2))
_SPLIT_LAYERS = {6: (1, 13, 2), 18: (0, 6, 1)}  # layer: (earlier shard, tensors in it, later shard)
_SHARED_SHARD = 2  # embed_tokens, norm and lm_head


def shard_name(i: int) -> str:
    return f"model-{i:05d}-of-00002.safetensors"  # the published names: three files, numbered from 0


def standin_weight_map(num_layers: int) -> dict[str, str]:
    """Tensor name -> shard file, as in the published index for every layer that exists
    (layers beyond the published 24 go where layer 23 went)."""
    weight_map = {}
    per_layer: dict[int, list[str]] = {}
    for spec in standin_tensor_specs(num_layers):
        if spec.name.startswith("model.layers."):
            per_layer.setdefault(int(spec.name.split(".")[2]), []).append(spec.name)
        else:
            weight_map[spec.name] = shard_name(_SHARED_SHARD)
    for layer, names in per_layer.items():
        first, n_first, later = _SPLIT_LAYERS.get(layer, (None, 0, _LAYER_SHARD.get(layer, 1)))
        for j, name in enumerate(names):
            weight_map[name] = shard_name(first if j < n_first else later)
    return weight_map


def standin_index_json(num_layers: int) -> str:
    """model.safetensors.index.json as published: one line, layers in the lexicographic order of their
    numbers, then embed_tokens, norm and lm_head (at 24 layers byte-identical to the published file)."""
    specs = standin_tensor_specs(num_layers)
    weight_map = standin_weight_map(num_layers)

    def order(name: str) -> tuple:
        if name.startswith("model.layers."):
            return (0, name.split(".")[2])
        return (1, ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight").index(name))

    ranked = sorted(range(len(specs)), key=lambda i: (order(specs[i].name), i))  # stable within a layer
    index = {
        "metadata": {"total_size": sum(s.nbytes for s in specs)},
        "weight_map": {specs[i].name: weight_map[specs[i].name] for i in ranked},
    }
    return json.dumps(index)


def write_standin_weights(out_dir: Path, num_layers: int, seed: int = 0) -> None:
    """Random weights in the published shards (only those holding a tensor at this layer count) with the
    index; tensors are generated and written shard by shard to bound memory."""
    import torch
    from safetensors.torch import save_file

    specs = standin_tensor_specs(num_layers)
    weight_map = standin_weight_map(num_layers)
    g = torch.Generator().manual_seed(seed)
    for shard in sorted(set(weight_map.values())):
        group = [s for s in specs if weight_map[s.name] == shard]
        save_file({s.name: _random(s, g) for s in group}, out_dir / shard, metadata={"format": "pt"})
    (out_dir / "model.safetensors.index.json").write_text(standin_index_json(num_layers))


def o200k_ranks_from_js_tiktoken(ranks_js: Path) -> bytes:
    """js-tiktoken's compressed o200k ranks (`"! <first rank> <b64 token> ..."` lines) as tiktoken's
    `<b64 token> <rank>` file, checked against tiktoken's sha256."""
    text = Path(ranks_js).read_text(encoding="utf-8")
    obj = json.loads(text[text.index("{") : text.rindex("}") + 1])
    lines = []
    for line in obj["bpe_ranks"].split("\n"):
        if not line:
            continue
        _, first, *tokens = line.split(" ")
        lines.extend(f"{token} {int(first) + i}\n" for i, token in enumerate(tokens))
    data = "".join(lines).encode("ascii")
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        raise MoeprintError(
            f"{ranks_js}: the expanded o200k ranks do not have tiktoken's sha256 {O200K_SHA256[:12]}..."
        )
    base64.b64decode(lines[-1].split(" ")[0])  # well-formed base64
    return data


def write_harmony_tokenizer(out_dir: Path, tiktoken_file: Path) -> None:
    """tokenizer.json (TikTokenConverter + harmony specials), tokenizer_config.json and chat_template.jinja."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converted = TikTokenConverter(
        vocab_file=str(tiktoken_file), pattern=O200K_PATTERN, extra_special_tokens=HARMONY_SPECIAL_TOKENS
    ).converted()
    ids = [converted.token_to_id(t) for t in HARMONY_SPECIAL_TOKENS]
    if ids != list(range(199998, 200019)):
        raise MoeprintError(f"harmony special tokens landed at ids {ids[0]}..{ids[-1]}, not 199998..200018.")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=converted, bos_token="<|startoftext|>", eos_token="<|return|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = HARMONY_CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    # the published files, not this transformers' own format of them
    (out_dir / "tokenizer_config.json").write_text(json.dumps(published_tokenizer_config(), indent=2) + "\n")
    special = {k: published_tokenizer_config()[k] for k in ("bos_token", "eos_token", "pad_token")}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def published_tokenizer_config() -> dict:
    """The published tokenizer_config.json (written by transformers 4.x: special tokens listed with their flags,
    no maximum length)."""
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    return {
        "added_tokens_decoder": {
            str(199998 + i): {"content": t, **flags} for i, t in enumerate(HARMONY_SPECIAL_TOKENS)
        },
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|return|>",
        "extra_special_tokens": {},
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1000000000000000019884624838656,  # transformers' VERY_LARGE_INTEGER: no limit set
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def build_standin(out_dir: str | Path, num_layers: int, tokenizer_dir: str | Path, seed: int = 0) -> Path:
    """A gpt-oss-20b stand-in with `num_layers` layers; the tokenizer files are copied from `tokenizer_dir`
    (built once by `write_harmony_tokenizer`)."""
    import shutil

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(gpt_oss_20b_config(num_layers), indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file() and (
            f.name.startswith("tokenizer") or f.name in ("chat_template.jinja", "special_tokens_map.json")
        ):
            shutil.copy2(f, out_dir / f.name)
    write_standin_weights(out_dir, num_layers, seed)
    return out_dir
