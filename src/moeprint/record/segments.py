"""Label generated tokens `think`, `answer` or `generated` from the chat format's channel markers.

Harmony (gpt-oss) messages look like `<|start|>assistant<|channel|>analysis<|message|>...<|end|>`.
Tokens of an `analysis` message body are `think`, of a `final` message body `answer`, the body's
closing token (`<|end|>`, `<|return|>`, `<|call|>`) included. Header tokens (`<|start|>`, role,
`<|channel|>`, channel name, `<|message|>`), other channels (`commentary`) and everything from a
tokenizer without these markers are `generated`. This is a property of the chat format (keyed on the
tokenizer's special tokens), not of the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHANNEL_SEGMENT = {"analysis": "think", "final": "answer"}


class ChannelSegmenter:
    def __init__(self, tokenizer: Any):
        vocab = tokenizer.get_vocab()
        self.tokenizer = tokenizer
        self.channel = vocab.get("<|channel|>")
        self.message = vocab.get("<|message|>")
        self.start = vocab.get("<|start|>")
        self.closers = {vocab[t] for t in ("<|end|>", "<|return|>", "<|call|>") if t in vocab}
        self.enabled = self.channel is not None and self.message is not None

    def segments(self, token_ids: Sequence[int]) -> list[str]:
        """One segment label per generated token."""
        if not self.enabled:
            return ["generated"] * len(token_ids)
        out: list[str] = []
        state = "generated"  # segment of the current message body
        header: list[int] | None = None  # channel-name tokens while inside `<|channel|>...<|message|>`
        for tok in token_ids:
            if tok == self.channel:
                header, state = [], "generated"
                out.append("generated")
            elif tok == self.message and header is not None:
                name = self.tokenizer.decode(header).strip().split(" ")[0] if header else ""
                state = CHANNEL_SEGMENT.get(name, "generated")
                header = None
                out.append("generated")
            elif header is not None:
                header.append(tok)
                out.append("generated")
            elif tok == self.start:
                state = "generated"
                out.append("generated")
            else:
                out.append(state)
                if tok in self.closers:
                    state = "generated"
        return out
