"""A plan applied at load time as a router mask: routers compute logits from the kept experts' rows only.

This computes what the physically pruned checkpoint computes, bit for bit (tests/test_prune_surgery.py,
tests/test_exactness.py), so plans can be evaluated without writing checkpoints.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.prune.plan import model_signature, validate_plan
from moeprint.prune.shards import list_tensors
from moeprint.types import PrunePlan


def load_masked(model_dir: str | Path, plan: PrunePlan, dtype: torch.dtype = torch.float32, router_rows=None):
    """Load a local model with stock transformers and apply `plan` as a router mask (with `router_rows`,
    a healed cut: per MoE layer the kept experts' replacement rows).

    The mask stays on for the model's lifetime; `model.moeprint_unmask()` restores the original router.
    """
    from transformers import AutoModelForCausalLM

    config = load_config_dict(model_dir)
    validate_plan(plan, model_signature(config))  # before any weight is read
    list_tensors(model_dir)  # reads the safetensors headers: a truncated or foreign file is one clear error
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.eval()
    stack = contextlib.ExitStack()
    stack.enter_context(adapter_for(model.config).router_mask(model, plan.kept, router_rows))
    model.moeprint_unmask = stack.close
    return model


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 32, chat: bool = True) -> str:
    """Greedy continuation of `prompt` (through the chat template when the tokenizer has one)."""
    if chat and getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]  # (1, S)
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # (1, S)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def masked_generate(model_dir: str | Path, plan: PrunePlan, prompt: str, max_new_tokens: int = 32,
                    router_rows=None) -> str:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise MoeprintError(f"cannot load the tokenizer from {model_dir} ({e.__class__.__name__}).") from None
    model = load_masked(model_dir, plan, router_rows=router_rows)
    return generate_text(model, tokenizer, prompt, max_new_tokens)
