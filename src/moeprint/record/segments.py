"""Label generated token ids `think`, `answer` or `generated` with the chat format's channel rule.

The chat format is the declared one whose channel markers the tokenizer's vocabulary holds
(`adapters.chat_format_for_vocab`), so it follows the tokenizer, not the architecture. The rule itself
is `ChatFormat.segments`, the same for recorded and imported runs (docs/formats.md). A tokenizer
without such markers labels every generated token `generated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moeprint.adapters import chat_format_for_vocab


class ChannelSegmenter:
    def __init__(self, tokenizer: Any):
        vocab = tokenizer.get_vocab()
        self.tokenizer = tokenizer
        self.format = chat_format_for_vocab(vocab)
        specials = self.format.special_tokens if self.format is not None else ()
        self.marker_of = {vocab[t]: t for t in specials if t in vocab}  # token id -> special token

    def segments(self, token_ids: Sequence[int]) -> list[str]:
        """One segment label per generated token."""
        if self.format is None:
            return ["generated"] * len(token_ids)
        ids = list(token_ids)
        markers = [self.marker_of.get(t) for t in ids]
        return self.format.segments(markers, lambda i, j: self.tokenizer.decode(ids[i:j]))
