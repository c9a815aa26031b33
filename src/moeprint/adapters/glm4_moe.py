"""GLM-4.5 (Glm4MoeForCausalLM): GLM-4.5 92 layers x 160 experts top-8, GLM-4.5-Air 46 layers (the first dense)
x 128 experts top-8, one shared expert, `n_group = topk_group = 1`, `routed_scaling_factor` 1.0.

transformers 5.24's Glm4MoeTopkRouter is DeepSeek-V3's router line for line (sigmoid scores, selection-only
`e_score_correction_bias`, group-limited top-k, `norm_topk_prob`, `routed_scaling_factor`), and the MoE block,
experts, dense-layer rule (`first_k_dense_replace`) and tensor names are DeepSeek-V3's: see deepseek_v3.py.
Only the config defaults differ (n_group 1, scaling 1.0).
"""

from __future__ import annotations

from moeprint.adapters.deepseek_v3 import _adapter

GLM4_MOE = _adapter("glm4_moe", "Glm4MoeForCausalLM", scaling_default=1.0, n_group_default=1)
