"""Replacement router rows of a healed cut: the only writer and reader of `*.router_rows.safetensors`.

A healed cut is a prune plan plus, for every MoE layer, new router rows for the kept experts (weight (n,H),
bias (n)), in ascending kept order; every expert and every other weight stays the base model's. The file
sits next to its plan and describes itself:

    tensors   layer_{i}.weight (n, H), layer_{i}.bias (n) (absent when the router has no bias)
    metadata  schema  moeprint.router_rows/1
              kept    JSON list of the kept ids per layer (must equal the plan's)
              heal    JSON of how the rows were fitted (objective, settings, calibration KL before / after)
              plan    JSON of the healed plan (so a rows file alone describes its cut)

A healed plan names its rows file in `extra.router_rows` (a bare file name in the plan's own folder).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moeprint.adapters.base import RouterRows
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_path
from moeprint.types import PrunePlan

ROWS_SCHEMA = "moeprint.router_rows/1"
ROWS_SUFFIX = ".router_rows.safetensors"


@dataclass(frozen=True)
class HealedRows:
    """Replacement router rows for every MoE layer of one plan."""

    kept: tuple[tuple[int, ...], ...]
    rows: tuple[RouterRows, ...]
    info: dict[str, Any] = field(default_factory=dict)  # the `heal` metadata
    plan: dict[str, Any] | None = None  # the plan JSON the rows heal (its `extra.heal` is `info`)

    def check_plan(self, plan: PrunePlan, source: str = "router rows") -> HealedRows:
        if tuple(map(tuple, plan.kept)) != self.kept:
            raise MoeprintError(f"{source} were fitted for other kept experts than the plan's; heal this plan first.")
        return self

    def check_hidden(self, config: dict[str, Any], source: str = "router rows") -> HealedRows:
        """The rows must be as wide as the model's hidden size (checked before any weight is read)."""
        hidden = config.get("hidden_size")
        for i, r in enumerate(self.rows):
            if hidden is not None and r.weight.shape[1] != int(hidden):
                raise MoeprintError(
                    f"{source}: layer {i} rows have width {r.weight.shape[1]}, the model's hidden size is {hidden}."
                )
        return self


def rows_path_for(plan_path: str | Path) -> Path:
    """`law-16.json` -> `law-16.router_rows.safetensors` beside it."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.stem + ROWS_SUFFIX)


def save_router_rows(path: str | Path, healed: HealedRows) -> Path:
    """Write the rows file atomically (tensors contiguous, on CPU, in their own dtype)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for i, r in enumerate(healed.rows):
        tensors[f"layer_{i}.weight"] = r.weight.detach().cpu().contiguous()  # (n, H)
        if r.bias is not None:
            tensors[f"layer_{i}.bias"] = r.bias.detach().cpu().contiguous()  # (n,)
    metadata = {
        "schema": ROWS_SCHEMA,
        "kept": json.dumps([list(k) for k in healed.kept]),
        "heal": json.dumps(healed.info, allow_nan=False),
    }
    if healed.plan is not None:
        metadata["plan"] = json.dumps(healed.plan, allow_nan=False)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_router_rows(path: str | Path) -> HealedRows:
    """Read and check a rows file: schema, one weight per layer, shapes consistent with `kept`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MoeprintError(f"router rows file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise MoeprintError(f"{path} is not a readable safetensors file ({e.__class__.__name__}).") from None
    if meta.get("schema") != ROWS_SCHEMA:
        raise MoeprintError(f"{path} is not a moeprint router rows file (schema {meta.get('schema')!r}).")
    try:
        kept = tuple(tuple(int(e) for e in k) for k in json.loads(meta["kept"]))
        info = json.loads(meta.get("heal") or "{}")
        plan = json.loads(meta["plan"]) if "plan" in meta else None
    except (KeyError, TypeError, ValueError):
        raise MoeprintError(f"{path} has corrupt metadata (kept / heal).") from None
    rows = []
    for i, keep in enumerate(kept):
        weight, bias = tensors.get(f"layer_{i}.weight"), tensors.get(f"layer_{i}.bias")
        if weight is None or weight.dim() != 2 or weight.shape[0] != len(keep):
            raise MoeprintError(f"{path}: layer {i} needs a weight of {len(keep)} rows.")
        if bias is not None and tuple(bias.shape) != (len(keep),):
            raise MoeprintError(f"{path}: layer {i} bias has shape {tuple(bias.shape)}, expected ({len(keep)},).")
        rows.append(RouterRows(weight, bias))
    if len(tensors) != sum(1 + (r.bias is not None) for r in rows):
        raise MoeprintError(f"{path} holds tensors for more layers than its kept lists ({len(kept)}).")
    return HealedRows(kept, tuple(rows), info, plan)


def rows_for_plan(
    plan: PrunePlan, plan_path: str | Path | None, rows_path: str | Path | None, config: dict[str, Any] | None = None
) -> HealedRows | None:
    """The rows a command should apply: `rows_path` if given, else the file the plan names in
    `extra.router_rows` (a bare name, resolved in the plan's folder only), else None (an unhealed cut).
    With the model's `config`, their width is checked too."""
    if rows_path is None:
        named = plan.extra.get("router_rows")
        if not named:
            return None
        if not isinstance(named, str) or Path(named).name != named or named in (".", ".."):
            raise MoeprintError(
                f"plan {plan_path}: extra.router_rows must be a file name beside the plan, got {named!r}."
            )
        if plan_path is None:
            raise MoeprintError("the plan names router rows but its folder is unknown; pass the rows file.")
        rows_path = Path(plan_path).parent / named
    healed = load_router_rows(rows_path).check_plan(plan, str(rows_path))
    return healed.check_hidden(config, str(rows_path)) if config is not None else healed


def rows_as_list(healed: HealedRows | None) -> Sequence[RouterRows] | None:
    return None if healed is None else list(healed.rows)


def with_heal_record(plan: PrunePlan, healed: HealedRows | None, rows_name: str | None = None) -> PrunePlan:
    """The plan with `extra.heal` (how its rows were fitted) and, if given, `extra.router_rows` (the file name)."""
    if healed is None:
        return plan
    extra = {**plan.extra, "heal": healed.info}
    if rows_name is not None:
        extra["router_rows"] = rows_name
    return dataclasses.replace(plan, extra=extra)


def plan_of_rows(healed: HealedRows, source: str) -> PrunePlan:
    """The plan a rows file describes (its `plan` metadata), checked against the rows' kept experts."""
    from moeprint.select.plan import plan_from_json

    if healed.plan is None:
        raise MoeprintError(f"{source} records no plan; give the plan it heals.")
    plan = plan_from_json(healed.plan, source)
    healed.check_plan(plan, source)
    return with_heal_record(plan, healed)
