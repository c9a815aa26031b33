"""Harmony, the chat format of gpt-oss: `<|start|>assistant<|channel|>analysis<|message|>...<|end|>`.

Generated text alternates an `analysis` message (the reasoning) and a `final` one (the answer); tool calls use
`commentary`. The segment rule is `ChatFormat.segments` (docs/formats.md).
"""

from __future__ import annotations

from moeprint.adapters.descriptors import ChatFormat

HARMONY = ChatFormat(
    name="harmony",
    start="<|start|>",
    channel="<|channel|>",
    message="<|message|>",
    terminators=("<|end|>", "<|return|>", "<|call|>"),
    channel_segments={"analysis": "think", "final": "answer"},
)
