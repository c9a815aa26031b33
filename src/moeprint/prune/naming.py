"""Parameter counts from tensor shapes, and model names built from them.

Quantised tensors count as the parameters they encode, not as bytes (`QuantLayout.parameters`: the
data tensor's bytes times its values per byte; shared scales are not parameters). With this rule the
count of a pruned checkpoint of the reference project's model reproduces its published sizes
(4 experts: 4.2B ... 32 experts: 20.9B), whatever the storage format.
"""

from __future__ import annotations

from collections.abc import Iterable

from moeprint.adapters import QUANT_LAYOUTS, QuantLayout
from moeprint.errors import MoeprintError

DEFAULT_NAME_PATTERN = "{family}-{size}-specialized-{domain}-pruned-moe-only-{n}-experts"


def count_parameters(tensors: Iterable[tuple[str, str, tuple[int, ...]]], layout: QuantLayout | None = None) -> int:
    """Parameters encoded by (name, safetensors dtype, shape) triples. `layout`: the checkpoint's quantised
    layout; None tries every declared one (a float family's tensors match none)."""
    layouts = (layout,) if layout is not None else QUANT_LAYOUTS
    total = 0
    for name, dtype, shape in tensors:
        numel = 1
        for d in shape:
            numel *= d
        encoded = next((n for q in layouts if (n := q.parameters(name, dtype, numel)) is not None), None)
        total += numel if encoded is None else encoded
    return total


def format_size(n_params: int) -> str:
    """6_577_057_344 -> '6.6b' (the reference scheme); small test models get 'm' or 'k' so names stay readable."""
    for scale, unit in ((1e9, "b"), (1e6, "m"), (1e3, "k")):
        if n_params >= scale * 0.95:
            return f"{n_params / scale:.1f}{unit}"
    return str(n_params)


def model_name(pattern: str, *, family: str, n_params: int, domain: str, n_experts: int, criterion: str = "") -> str:
    """Fill a name pattern; fields: {family} {size} {domain} {n} {criterion} {params}."""
    try:
        name = pattern.format(
            family=family, size=format_size(n_params), domain=domain, n=n_experts, criterion=criterion, params=n_params
        )
    except (KeyError, IndexError, ValueError) as e:
        raise MoeprintError(
            f"bad name pattern {pattern!r} ({e}); fields are {{family}} {{size}} {{domain}} {{n}} {{criterion}} {{params}}."
        ) from None
    if not name or "/" in name or name.startswith("."):
        raise MoeprintError(f"name pattern {pattern!r} gives an unusable folder name {name!r}.")
    return name


def family_name(model_type: str) -> str:
    """The model type as hub names spell it: underscores become hyphens ('a_b' -> 'a-b')."""
    return model_type.replace("_", "-")
