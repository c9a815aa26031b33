"""The one sizes grammar: how many experts per layer a factory or a sweep keeps.

A spec is a comma list of items, each a count (`8`), an inclusive range (`4-32`, with an optional step:
`8-32:8`) or a percentage of the model's experts (`25%`, rounded to the nearest count). Parsing checks
the grammar alone (the CLI does it before any work); `Sizes.resolve` turns a spec into sorted unique
counts once the model's expert count is known, and refuses any outside 1..experts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moeprint.errors import MoeprintError

_ITEM = re.compile(r"(?P<lo>[0-9]+)(?:-(?P<hi>[0-9]+)(?::(?P<step>[0-9]+))?)?|(?P<percent>[0-9]+(?:\.[0-9]+)?)%")
EXAMPLES = "8, 4,8,16, 4-32, 8-32:8 or 25%,50%"
GRAMMAR = f"counts, ranges or percentages of the experts, e.g. {EXAMPLES}"


@dataclass(frozen=True)
class SizeItem:
    """One item of a spec: counts lo..hi every `step`, or `percent` of the experts."""

    text: str
    lo: int = 0
    hi: int = 0
    step: int = 1
    percent: float | None = None

    def counts(self, num_experts: int) -> list[int]:
        if self.percent is not None:
            return [round(num_experts * self.percent / 100)]
        return list(range(self.lo, self.hi + 1, self.step))


@dataclass(frozen=True)
class Sizes:
    """A parsed sizes spec; `resolve(num_experts)` gives the counts."""

    text: str
    items: tuple[SizeItem, ...]

    def resolve(self, num_experts: int) -> list[int]:
        sizes: set[int] = set()
        for item in self.items:
            counts = item.counts(num_experts)
            if any(not 1 <= n <= num_experts for n in counts):
                raise MoeprintError(f"--sizes item {item.text!r} is outside 1..{num_experts} experts.")
            sizes.update(counts)
        return sorted(sizes)


def parse_sizes(text: str) -> Sizes:
    """Read a sizes spec (the grammar only); one clear error naming the item that is wrong."""
    items = []
    for part in re.sub(r"\s+", "", str(text)).split(","):
        if not part:
            continue
        m = _ITEM.fullmatch(part)
        if m is None:
            raise MoeprintError(f"sizes item {part!r} is not a count, range or percentage (e.g. {EXAMPLES}).")
        if m["percent"] is not None:
            items.append(SizeItem(part, percent=float(m["percent"])))
            continue
        lo, hi, step = int(m["lo"]), int(m["hi"] or m["lo"]), int(m["step"] or 1)
        if hi < lo or step < 1:
            raise MoeprintError(f"sizes item {part!r} is an empty range.")
        items.append(SizeItem(part, lo, hi, step))
    if not items:
        raise MoeprintError("the sizes name no size.")
    return Sizes(str(text), tuple(items))


def resolve_sizes(sizes: str | Sizes | list[int] | tuple[int, ...], num_experts: int) -> list[int]:
    """Counts from a spec string, a parsed spec or a list of counts (library callers), all checked alike."""
    if isinstance(sizes, (list, tuple)):
        sizes = parse_sizes(",".join(str(int(n)) for n in sizes))
    elif not isinstance(sizes, Sizes):
        sizes = parse_sizes(sizes)
    return sizes.resolve(num_experts)
