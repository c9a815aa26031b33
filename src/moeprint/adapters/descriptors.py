"""Descriptors an adapter declares besides its module paths: how its checkpoints store quantised experts,
how its chat format marks channels, and which published checkpoints it knows by shape.

Code outside `moeprint.adapters` asks these records instead of naming a quantisation layout, a chat
format or a hub id (tests/test_boundaries.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class QuantLayout:
    """Quantised expert weights stored as two tensors beside the float name `W`: `W + data_suffix` (the codes,
    `values_per_byte` weights per byte) and `W + scale_suffix` (shared scales, not parameters), both of
    safetensors dtype `storage_dtype` and with the expert axis where the float tensor has it.

    `decode(data, scales, dtype)` gives the float parameter the model holds; `encode(weight)` is its inverse up
    to rounding (tests and fixtures build checkpoints with it). `decoded_shape(data_shape)` is the float shape,
    from headers only. A checkpoint is in this layout when `config["quantization_config"]["quant_method"]`
    equals `quant_method`; `config_keys` are kept by a cut that stays quantised and dropped by one that decodes.
    """

    quant_method: str
    label: str  # as a model card names the format
    data_suffix: str
    scale_suffix: str
    storage_dtype: str
    values_per_byte: int
    decode: Callable[[torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor]
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    decoded_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    config_keys: tuple[str, ...] = ("quantization_config",)
    # the rest of `quantization_config` as the family's published checkpoints write it (modules left in float)
    config_extra: Mapping[str, Any] = field(default_factory=dict)
    # a context manager around transformers' from_pretrained of such a checkpoint (e.g. a leaner decode), or None
    loading: Callable[[], AbstractContextManager[None]] | None = None

    @property
    def suffixes(self) -> tuple[str, str]:
        return (self.data_suffix, self.scale_suffix)

    def float_name(self, name: str) -> str | None:
        """`W` for `W + data_suffix`, else None."""
        return name.removesuffix(self.data_suffix) if name.endswith(self.data_suffix) else None

    def scales_name(self, data_name: str) -> str:
        return data_name.removesuffix(self.data_suffix) + self.scale_suffix

    def is_data(self, name: str, dtype: str) -> bool:
        return dtype == self.storage_dtype and name.endswith(self.data_suffix)

    def is_scales(self, name: str, dtype: str) -> bool:
        return dtype == self.storage_dtype and name.endswith(self.scale_suffix)

    def parameters(self, name: str, dtype: str, numel: int) -> int | None:
        """Weights encoded by one stored tensor of `numel` elements (0 for scales), or None if not this layout's."""
        if self.is_data(name, dtype):
            return self.values_per_byte * numel
        if self.is_scales(name, dtype):
            return 0
        return None

    def quantization_config(self) -> dict[str, Any]:
        return {"quant_method": self.quant_method, **self.config_extra}

    def describes(self, config: Mapping[str, Any]) -> bool:
        """Whether a config dict says its checkpoint is stored in this layout."""
        return (config.get("quantization_config") or {}).get("quant_method") == self.quant_method


# segment labels (moeprint.types.SEGMENTS) a channel chat format gives generated tokens
UNKNOWN_CHANNEL = "generated"


@dataclass(frozen=True)
class ChatFormat:
    """A chat format whose messages name a channel: `start role channel NAME message BODY terminator`.

    The rule (one for recorded and imported runs, docs/formats.md): generated tokens split into messages at
    the terminators. Every token of a message, its header (`start`, role, `channel`, channel name, `message`)
    included, gets the segment of the message's channel (`channel_segments`, unknown channels -> `generated`);
    a terminator belongs to no message and is `generated`. The channel name is the text between the message's
    first `channel` marker and the next `message` marker (or the message's end), first word only.
    """

    name: str
    start: str
    channel: str
    message: str
    terminators: tuple[str, ...]
    channel_segments: Mapping[str, str]

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return (self.start, self.channel, self.message, *self.terminators)

    def segments(self, markers: Sequence[str | None], text: Callable[[int, int], str]) -> list[str]:
        """One segment per token. `markers[i]` is token i's special token of this format (None for any other
        token); `text(i, j)` is the decoded text of tokens i..j-1 (only asked for channel names)."""
        out = [UNKNOWN_CHANNEL] * len(markers)
        start = 0
        while start < len(markers):
            end = start
            while end < len(markers) and markers[end] not in self.terminators:
                end += 1
            segment = self.channel_segments.get(self._channel_name(markers, text, start, end), UNKNOWN_CHANNEL)
            out[start:end] = [segment] * (end - start)
            start = end + 1  # the terminator stays `generated`
        return out

    def segment_texts(self, tokens: Sequence[str]) -> list[str]:
        """`segments` of token strings (imported traces carry strings, not ids)."""
        specials = set(self.special_tokens)
        return self.segments([t if t in specials else None for t in tokens], lambda i, j: "".join(tokens[i:j]))

    def _channel_name(self, markers: Sequence[str | None], text: Callable[[int, int], str], start: int, end: int):
        first = next((i for i in range(start, end) if markers[i] == self.channel), None)
        if first is None:
            return None
        stop = next((i for i in range(first + 1, end) if markers[i] == self.message), end)
        words = text(first + 1, stop).split() if stop > first + 1 else []
        return words[0] if words else None

    def in_vocab(self, vocab: Mapping[str, int]) -> bool:
        return self.channel in vocab and self.message in vocab


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published checkpoint of the family, recognised by its shape (imports of published routing name it).
    `published_routing`: names of published routing data sets recorded on it (`importers/`)."""

    hub_id: str
    num_layers: int
    num_experts: int
    top_k: int
    published_routing: tuple[str, ...] = ()
