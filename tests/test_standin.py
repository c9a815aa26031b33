"""The real-format gpt-oss-20b stand-in: published sizes, the o200k_harmony tokenizer against
openai-harmony's encoder, and this project's harmony chat template against openai-harmony's rendering."""

from __future__ import annotations

import pytest

from moeprint.prompts import TemplateInputs, render_prompt
from moeprint.testbed.standin import PUBLISHED_TOTAL_SIZE_20B, gpt_oss_20b_config, standin_tensor_specs
from moeprint.types import PromptRecord
from standin_fixtures import harmony_encoding, harmony_tokenizer_dir, tiktoken_dir  # noqa: F401 (fixtures)

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


@pytest.mark.slow  # builds the 200k-token tokenizer once per session (~1 min)
def test_tokenizer_encodes_like_openai_harmony(harmony_tokenizer_dir, harmony_encoding):
    from transformers import AutoTokenizer

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
