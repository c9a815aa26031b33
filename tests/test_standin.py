"""The real-format gpt-oss-20b stand-in: the published files byte for byte, published sizes, the o200k_harmony
tokenizer against openai-harmony's encoder, and this project's harmony chat template against openai-harmony's
rendering.

Published values: the sha256 of openai/gpt-oss-20b's files at revision 6cee5e81ee83917806bbde320786a8fb61efebee
as pinned by a public repository that verifies its local copy before loading (found with the code search),
and the files' text as reproduced in MaximeRivest/moereport (tmp.md, commit e89a9fc8), whose bytes hash to
those pins (config.json, generation_config.json, model.safetensors.index.json, tokenizer_config.json)."""

from __future__ import annotations

import hashlib
import json

import pytest

from moeprint.prompts import TemplateInputs, render_prompt
from moeprint.testbed.standin import (
    GENERATION_CONFIG,
    PUBLISHED_TOTAL_SIZE_20B,
    gpt_oss_20b_config,
    published_tokenizer_config,
    standin_index_json,
    standin_tensor_specs,
    standin_weight_map,
)
from moeprint.types import PromptRecord
from standin_fixtures import harmony_encoding, harmony_tokenizer_dir, tiktoken_dir  # noqa: F401 (fixtures)

PUBLISHED_SHA256 = {
    "config.json": "3a2a26ded679375b7928ddeca59764df7cea83220c1961035f6d6e232659e9ce",
    "generation_config.json": "f9970ada892d2d1f72e3ed0a6535ccebadd11897318794ca671d8c7014c957da",
    "model.safetensors.index.json": "0e085b977c4c9942f85938828e8c989ed7d5cdabf852e4da6a67c116cd502cd1",
    "tokenizer_config.json": "9279e942392b742d633c7adbb89ebe002c98399db8926a7af5125c726f404070",
    "tokenizer.json": "0614fe83cadab421296e664e1f48f4261fa8fef6e03e63bb75c20f38e37d07d3",
}


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


SAMPLES = [
    "Hello, world! It's 2025-08-05 and we're testing o200k.",
    "def f(x):\n    return x ** 2  # squared\n\n\tindent",
    "Ünïcödé: naïve café, 東京都, Москва, مرحبا, 🙂🚀",
    "numbers 1234567 3.14159 1e-10 and   multiple   spaces\r\n",
    "<|start|> is plain text here",
]


def test_24_layers_are_exactly_the_published_checkpoint_size():
    assert sum(s.nbytes for s in standin_tensor_specs(24)) == PUBLISHED_TOTAL_SIZE_20B
    config = gpt_oss_20b_config(2)
    assert config["num_hidden_layers"] == 2 and config["layer_types"] == ["sliding_attention", "full_attention"]
    assert (config["hidden_size"], config["num_local_experts"], config["vocab_size"]) == (2880, 32, 201088)


def test_24_layer_files_are_byte_identical_to_the_published_ones():
    """What build_standin writes (config.json, generation_config.json, the index; tokenizer_config.json by
    write_harmony_tokenizer), at the published 24 layers, hashes to the published files' sha256."""
    assert _sha256(json.dumps(gpt_oss_20b_config(24), indent=2) + "\n") == PUBLISHED_SHA256["config.json"]
    assert _sha256(json.dumps(GENERATION_CONFIG, indent=2) + "\n") == PUBLISHED_SHA256["generation_config.json"]
    assert _sha256(standin_index_json(24)) == PUBLISHED_SHA256["model.safetensors.index.json"]
    tokenizer_config = json.dumps(published_tokenizer_config(), indent=2) + "\n"
    assert _sha256(tokenizer_config) == PUBLISHED_SHA256["tokenizer_config.json"]


def test_shorter_stand_ins_keep_the_published_config_and_shards():
    full, short = gpt_oss_20b_config(24), gpt_oss_20b_config(2)
    assert {k for k in full if full[k] != short[k]} == {"num_hidden_layers", "layer_types"}
    assert short["layer_types"] == full["layer_types"][:2]
    # every tensor of a shorter stand-in sits in the shard the published index gives it
    published = json.loads(standin_index_json(24))["weight_map"]
    assert standin_weight_map(2).items() <= published.items()
    assert set(standin_weight_map(2).values()) == {
        "model-00000-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    index = json.loads(standin_index_json(2))
    assert index["metadata"]["total_size"] == sum(s.nbytes for s in standin_tensor_specs(2))
    assert list(index["weight_map"]) == [k for k in published if k in index["weight_map"]]  # published order


@pytest.mark.slow  # builds the 200k-token tokenizer once per session (~1 min)
def test_tokenizer_encodes_like_openai_harmony(harmony_tokenizer_dir, harmony_encoding):
    from transformers import AutoTokenizer

    assert _sha256((harmony_tokenizer_dir / "tokenizer.json").read_bytes()) == PUBLISHED_SHA256["tokenizer.json"]
    tok = AutoTokenizer.from_pretrained(harmony_tokenizer_dir)
    assert len(tok) == 200019
    for i, name in [
        (199998, "<|startoftext|>"),
        (200002, "<|return|>"),
        (200006, "<|start|>"),
        (200018, "<|endofprompt|>"),
    ]:
        assert tok.convert_ids_to_tokens(i) == name
    for text in SAMPLES[:-1]:
        assert tok(text, add_special_tokens=False)["input_ids"] == harmony_encoding.encode(text, allowed_special=set())


@pytest.mark.slow
@pytest.mark.parametrize("effort", ["low", "medium", "high"])
@pytest.mark.parametrize("with_system", [False, True])
def test_chat_template_renders_like_openai_harmony(harmony_tokenizer_dir, harmony_encoding, effort, with_system):
    import openai_harmony as h
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(harmony_tokenizer_dir)
    messages = ([{"role": "system", "content": "Answer in one short sentence."}] if with_system else []) + [
        {"role": "user", "content": "Why is the sky blue? Ünïcödé 🙂"}
    ]
    prompt = PromptRecord("p", "science", "test", messages=tuple(messages))
    ours = tok(render_prompt(tok, prompt, effort, TemplateInputs("2025-08-05")), add_special_tokens=False)["input_ids"]

    system = (
        h.SystemContent.new()
        .with_reasoning_effort(h.ReasoningEffort(effort.capitalize()))
        .with_conversation_start_date("2025-08-05")
    )
    convo = [h.Message.from_role_and_content(h.Role.SYSTEM, system)]
    if with_system:
        convo.append(
            h.Message.from_role_and_content(
                h.Role.DEVELOPER, h.DeveloperContent.new().with_instructions(messages[0]["content"])
            )
        )
    convo.append(h.Message.from_role_and_content(h.Role.USER, messages[-1]["content"]))
    theirs = harmony_encoding.render_conversation_for_completion(h.Conversation.from_messages(convo), h.Role.ASSISTANT)
    assert ours == list(theirs)
