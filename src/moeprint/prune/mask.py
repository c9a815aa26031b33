"""A plan applied at load time as a router mask: routers compute logits from the kept experts' rows only.

This computes what the physically pruned checkpoint computes, bit for bit (tests/test_prune_surgery.py,
tests/test_exactness.py), so plans can be evaluated without writing checkpoints.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.io.loader import LoadSettings, check_context, context_length, input_device, load_causal_lm, load_tokenizer
from moeprint.io.shards import list_tensors
from moeprint.select.plan import model_signature, validate_plan
from moeprint.types import PrunePlan


def load_masked(model_dir: str | Path, plan: PrunePlan, settings: LoadSettings = LoadSettings(), router_rows=None):
    """Load a local model with stock transformers (placed and typed by `settings`) and apply `plan`
    as a router mask, in the model's own dtype and on its own device(s) (with `router_rows`, a healed cut:
    per MoE layer the kept experts' replacement rows).

    The mask stays on for the model's lifetime; `model.moeprint_unmask()` restores the original router.
    """
    config = load_config_dict(model_dir)
    validate_plan(plan, model_signature(config))  # before any weight is read
    list_tensors(model_dir)  # reads the safetensors headers: a truncated or foreign file is one clear error
    model = load_causal_lm(model_dir, settings)
    stack = contextlib.ExitStack()
    stack.enter_context(adapter_for(model.config).router_mask(model, plan.kept, router_rows))
    model.moeprint_unmask = stack.close
    return model


def prompt_ids(tokenizer, prompt: str, chat: bool = True) -> torch.Tensor:
    """The prompt's token ids as the model sees them (through the chat template when the tokenizer has one)."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]  # (1, S)
    return tokenizer(prompt, return_tensors="pt")["input_ids"]  # (1, S)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 32, chat: bool = True) -> str:
    """Greedy continuation of `prompt`; one clear error if prompt and continuation exceed the model's context."""
    ids = prompt_ids(tokenizer, prompt, chat)
    check_context(ids.shape[1] + max_new_tokens, context_length(model), "the prompt plus --max-new-tokens")
    ids = ids.to(input_device(model))
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def masked_generate(
    model_dir: str | Path,
    plan: PrunePlan,
    prompt: str,
    max_new_tokens: int = 32,
    settings: LoadSettings = LoadSettings(),
    router_rows=None,
) -> str:
    tokenizer = load_tokenizer(model_dir)
    # The length check needs only the tokenizer and config: a too-long prompt fails before any weight loads.
    n = prompt_ids(tokenizer, prompt).shape[1]
    check_context(n + max_new_tokens, context_length(load_config_dict(model_dir)), "the prompt plus --max-new-tokens")
    model = load_masked(model_dir, plan, settings, router_rows=router_rows)
    return generate_text(model, tokenizer, prompt, max_new_tokens)
