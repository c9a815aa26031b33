"""Tiny random models of DeepSeek-V3, GLM-4.5 and Qwen3.5-MoE, built from configs (no downloads).

- DeepSeek-V3: 3 layers (the first dense), 8 experts in 2 groups of 4, a token may use 1 group, top-2,
  renormalised, scaled by 2.5; random `e_score_correction_bias` (selection only) so that choice and weights differ.
- GLM-4.5: 3 layers (the first dense), 8 experts, one group, top-2, not renormalised, scaled by 1.0 (as released).
- ERNIE-4.5: 3 layers (the first dense), 8 experts top-2, one shared expert, a random (1, E) correction bias.
- MiniMax-M2: 2 layers, 8 experts top-2, a random correction bias on the MoE block.
- Llama-4: the hub's multimodal wrapper (Llama4ForConditionalGeneration, a 1-layer vision tower) around 4 text
  layers, every second one MoE (`interleave_moe_layer_step=2`, as Maverick), 8 experts top-2, a shared expert.
- Qwen3.5-MoE: the hub's multimodal wrapper (Qwen3_5MoeForConditionalGeneration, a 1-block vision tower) around
  4 text layers (3 Gated-DeltaNet + 1 full attention), 8 experts top-2, a gated shared expert.
`save_pretrained` writes per-expert tensors; `fused=True` writes `mlp.experts.gate_up_proj` (E,2I,H), as the
Qwen3.5 hub checkpoints store them.
"""

from __future__ import annotations

from pathlib import Path

import torch

NEW_FAMILIES = ("deepseek_v3", "glm4_moe", "qwen3_5_moe", "ernie4_5_moe", "minimax_m2", "llama4")
E, TOP_K = 8, 2
MOE_LAYERS = {
    "deepseek_v3": [1, 2],
    "glm4_moe": [1, 2],
    "qwen3_5_moe": [0, 1, 2, 3],
    "ernie4_5_moe": [1, 2],
    "minimax_m2": [0, 1],
    "llama4": [1, 3],
}
# per family, the expert counts the oracle runs: {1, top_k, E-1, E} or their group-valid equivalents
# (DeepSeek-V3 here: 2 groups, at least 2 per group -> 4, 6, 8; GLM: 1 group of at least 2 -> 2, 7, 8)
ORACLE_SIZES = {
    "deepseek_v3": (4, 6, 8),
    "glm4_moe": (2, 7, 8),
    "qwen3_5_moe": (1, 2, 7, 8),
    "ernie4_5_moe": (1, 2, 7, 8),
    "minimax_m2": (1, 2, 7, 8),
    "llama4": (1, 2, 7, 8),
}


def tiny_config(family: str):
    from transformers import (
        DeepseekV3Config,
        Ernie4_5_MoeConfig,
        Glm4MoeConfig,
        Llama4Config,
        MiniMaxM2Config,
        Qwen3_5MoeConfig,
    )

    common = dict(
        vocab_size=64,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts_per_tok=TOP_K,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if family == "deepseek_v3":
        return DeepseekV3Config(
            architectures=["DeepseekV3ForCausalLM"],
            num_hidden_layers=3,
            intermediate_size=48,
            moe_intermediate_size=16,
            n_routed_experts=E,
            n_group=2,
            topk_group=1,
            first_k_dense_replace=1,
            n_shared_experts=1,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            q_lora_rank=16,
            kv_lora_rank=8,
            qk_rope_head_dim=4,
            qk_nope_head_dim=4,
            v_head_dim=8,
            **{**common, "num_key_value_heads": 4},
        )
    if family == "glm4_moe":
        return Glm4MoeConfig(
            architectures=["Glm4MoeForCausalLM"],
            num_hidden_layers=3,
            intermediate_size=48,
            moe_intermediate_size=16,
            n_routed_experts=E,
            n_group=1,
            topk_group=1,
            head_dim=8,
            first_k_dense_replace=1,
            n_shared_experts=1,
            norm_topk_prob=False,
            routed_scaling_factor=1.0,
            **common,
        )
    if family == "ernie4_5_moe":
        moe = dict(moe_num_experts=E, moe_k=TOP_K, moe_num_shared_experts=1, moe_layer_start_index=1)
        rest = {k: v for k, v in common.items() if k != "num_experts_per_tok"}
        return Ernie4_5_MoeConfig(
            architectures=["Ernie4_5_MoeForCausalLM"],
            num_hidden_layers=3,
            intermediate_size=48,
            moe_intermediate_size=16,
            **moe,
            **rest,
        )
    if family == "minimax_m2":
        return MiniMaxM2Config(
            architectures=["MiniMaxM2ForCausalLM"],
            num_hidden_layers=2,
            intermediate_size=16,
            head_dim=8,
            num_local_experts=E,
            **common,
        )
    if family == "llama4":
        text = dict(
            common,
            num_hidden_layers=4,
            intermediate_size=16,
            intermediate_size_mlp=48,
            head_dim=8,
            num_local_experts=E,
            interleave_moe_layer_step=2,
        )
        vision = dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            image_size=32,
            patch_size=16,
            vision_output_dim=16,
            projector_input_dim=16,
            projector_output_dim=32,
        )
        return Llama4Config(architectures=["Llama4ForConditionalGeneration"], text_config=text, vision_config=vision)
    if family == "qwen3_5_moe":
        text = dict(
            common,
            num_hidden_layers=4,
            head_dim=8,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
            num_experts=E,
            linear_num_value_heads=4,
            linear_num_key_heads=2,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
        )
        vision = dict(depth=1, hidden_size=16, num_heads=2, intermediate_size=16, out_hidden_size=32)
        return Qwen3_5MoeConfig(
            architectures=["Qwen3_5MoeForConditionalGeneration"],
            text_config=text,
            vision_config=vision,
            tie_word_embeddings=False,
        )
    raise ValueError(family)


def randomise_routers(model: torch.nn.Module) -> None:
    """Routers start at zero (and correction biases at 0): give them real logits and a real selection bias."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mlp.gate.weight", "feed_forward.router.weight")):
                p.normal_(0.0, 0.5)
        for name, b in [*model.named_buffers(), *model.named_parameters()]:
            if name.endswith("e_score_correction_bias"):  # a buffer in DeepSeek-V3 / MiniMax, a parameter in ERNIE
                b.normal_(0.0, 0.3)


def build_model(family: str, seed: int = 0, causal_lm: bool = False, vocab_size: int = 64) -> torch.nn.Module:
    """The model as saved (Qwen3.5: the multimodal wrapper) or, with `causal_lm`, as AutoModelForCausalLM
    loads it (Qwen3.5: the text model alone, whose config names no architecture)."""
    from transformers import AutoModelForCausalLM, Llama4ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration

    torch.manual_seed(seed)
    config = tiny_config(family)
    config.get_text_config().vocab_size = vocab_size
    multimodal = {"qwen3_5_moe": Qwen3_5MoeForConditionalGeneration, "llama4": Llama4ForConditionalGeneration}
    if family in multimodal and causal_lm:
        model = AutoModelForCausalLM.from_config(config.text_config, dtype=torch.float32)
    elif family in multimodal:
        model = multimodal[family](
            config
        )  # float32 by default (a cast would make Llama-4's complex rotary buffer real)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomise_routers(model)
    return model.eval()


def build_tiny(out_dir: Path, family: str, seed: int = 0, fused: bool = False, tokenizer: bool = False) -> Path:
    """Write a random tiny model of `family` (fp32 safetensors) in the per-expert or the fused layout, with the
    testbed's small BPE tokenizer if asked."""
    vocab = 64
    if tokenizer:
        from moeprint.testbed.tiny import build_tokenizer

        vocab = len(build_tokenizer(out_dir, vocab_size=256))
    build_model(family, seed, vocab_size=vocab).save_pretrained(out_dir, save_original_format=not fused)
    return Path(out_dir)
