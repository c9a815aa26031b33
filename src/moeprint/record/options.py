"""Recording options checked before anything heavy is imported or written (`--shard I/N`, sizes)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from moeprint.errors import MoeprintError
from moeprint.io.manifest import GenerationSettings, TemplateInputs


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.count == self.index


@dataclass(frozen=True)
class RecordSettings:
    """What decides the bytes a recording writes (besides the model and the prompts)."""

    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False
    seed: int = 0
    logits: bool = False
    expert_norms: bool = False
    reasoning_effort: str | None = None
    dtype: str = "auto"  # the --dtype asked for (moeprint.io.loader): the dtype the model runs in changes the routing
    template: TemplateInputs = field(default_factory=TemplateInputs)  # fixed chat-template inputs (the date)

    def generation(self) -> GenerationSettings:
        """The manifest's `generation` block."""
        return GenerationSettings(
            self.max_new_tokens, self.do_sample, self.seed, self.batch_size, self.reasoning_effort, self.dtype
        )


def parse_shard(shard: str | Shard | tuple[int, int] | None) -> Shard | None:
    if shard is None or isinstance(shard, Shard):
        return shard
    if isinstance(shard, tuple):
        index, count = shard
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
        if not m:
            raise MoeprintError(f"--shard must look like I/N (e.g. 0/4), not {shard!r}.")
        index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 0 <= index < count:
        raise MoeprintError(f"--shard {index}/{count}: need N >= 1 and 0 <= I < N.")
    return Shard(index, count)


def check_settings(batch_size: int, max_new_tokens: int, shard: str | Shard | tuple[int, int] | None) -> Shard | None:
    """The parsed shard; one clear error for a size below 1 or a malformed shard."""
    if batch_size < 1:
        raise MoeprintError("--batch-size must be at least 1.")
    if max_new_tokens < 0:
        raise MoeprintError("--max-new-tokens must be at least 0 (0: record the prompt tokens only).")
    return parse_shard(shard)
