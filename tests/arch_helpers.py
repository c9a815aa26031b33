"""Tiny random models of the non-gpt-oss families (Mixtral, Qwen3-MoE, OLMoE), built from configs.

`save_pretrained` in transformers 5.23 writes these families in their original per-expert layout
(`...experts.{e}.w1.weight`); `fused=True` writes the in-memory fused layout (`...experts.gate_up_proj`).
"""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("mixtral", "qwen3_moe", "olmoe")
E, TOP_K = 8, 2


def tiny_config(family: str, vocab_size: int = 64, eos_token_id: int | None = None, pad_token_id: int | None = None):
    """A small config of `family`: 8 experts, top-2, hidden 32. Qwen3-MoE gets 3 layers, the middle
    one dense (`mlp_only_layers=[1]`), and renormalised top-k; OLMoE keeps `norm_topk_prob=False`."""
    from transformers import MixtralConfig, OlmoeConfig, Qwen3MoeConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts_per_tok=TOP_K,
        max_position_embeddings=512,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    if family == "mixtral":
        return MixtralConfig(
            architectures=["MixtralForCausalLM"],
            num_hidden_layers=2,
            intermediate_size=16,
            num_local_experts=E,
            **common,
        )
    if family == "qwen3_moe":
        return Qwen3MoeConfig(
            architectures=["Qwen3MoeForCausalLM"],
            num_hidden_layers=3,
            intermediate_size=48,
            moe_intermediate_size=16,
            num_experts=E,
            head_dim=8,
            mlp_only_layers=[1],
            norm_topk_prob=True,
            **common,
        )
    if family == "olmoe":
        return OlmoeConfig(
            architectures=["OlmoeForCausalLM"], num_hidden_layers=2, intermediate_size=16, num_experts=E, **common
        )
    raise ValueError(family)


def build_tiny(out_dir: Path, family: str, seed: int = 0, fused: bool = False, tokenizer: bool = False) -> Path:
    """Write a random tiny model of `family` (fp32 safetensors); with a BPE tokenizer if asked."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    vocab, eos, pad = 64, None, None
    if tokenizer:
        from moeprint.testbed.tiny import build_tokenizer

        tok = build_tokenizer(out_dir, vocab_size=256)
        vocab, eos, pad = len(tok), tok.convert_tokens_to_ids("<|return|>"), tok.convert_tokens_to_ids("<|pad|>")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab, eos, pad), dtype=torch.float32)
    with torch.no_grad():  # routers start at zero in some families: give them real logits
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.normal_(0.0, 0.5)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
    model.save_pretrained(out_dir, save_original_format=not fused)
    return out_dir


def record_with_inputs(model, adapter, token_ids):
    """One forward under RouterHooks (logits and expert norms): (the per-layer captured calls, each MoE block's
    input (T, H)) -- the input is what an independent recomputation of the routing starts from."""
    from moeprint.record.hooks import RouterHooks

    blocks = adapter.moe_blocks(model)
    inputs = []
    pre = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].reshape(-1, a[0].shape[-1]))) for _, b in blocks]
    try:
        with RouterHooks(model, adapter, logits=True, expert_norms=True) as capture, torch.no_grad():
            model(token_ids)
    finally:
        for h in pre:
            h.remove()
    return capture.take(), inputs
