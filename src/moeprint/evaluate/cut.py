"""The model under test ("the cut") beside its base: a prune plan applied as a router mask on the
loaded base, or a pruned checkpoint loaded on its own.

A mask costs nothing to apply and equals the physically pruned model (the exactness oracle), so a
sweep evaluates hundreds of plans on one loaded base. `Cut.active()` is the only place that
switches the base into the cut; everything else just calls `cut.model` inside it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from moeprint.adapters import MoEAdapter, adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.io.loader import LoadSettings, load_causal_lm, load_tokenizer
from moeprint.io.shards import list_tensors
from moeprint.prune.surgery import read_checkpoint_record
from moeprint.types import PrunePlan


@dataclass
class LoadedModel:
    path: str
    model: torch.nn.Module
    tokenizer: Any
    adapter: MoEAdapter

    @property
    def num_layers(self) -> int:
        return len(self.adapter.moe_blocks(self.model))

    @property
    def num_experts(self) -> int:
        return self.adapter.num_experts(self.model.config)

    @property
    def top_k(self) -> int:
        return self.adapter.top_k(self.model.config)


def load_model(path: str | Path, settings: LoadSettings = LoadSettings()) -> LoadedModel:
    """A local Hugging Face MoE model folder (safetensors only, no remote code), in eval mode."""
    config = load_config_dict(path)
    adapter = adapter_for(config)
    list_tensors(path)  # reads the safetensors headers: a truncated or foreign file is one clear error
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, settings)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(str(path), model, tokenizer, adapter)


def release(loaded: LoadedModel) -> None:
    """Free a loaded model's weights now (before the next model loads), on the CPU and the GPU."""
    import gc

    loaded.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def read_plan(path: str | Path, model_config: dict[str, Any]) -> PrunePlan:
    """A plan JSON checked against the base model's config (the prune stage's validation), before any weight is read."""
    from moeprint.select.plan import load_plan, model_signature, validate_plan

    return validate_plan(load_plan(path), model_signature(model_config))


class CutKind(StrEnum):
    """What a cut is; the value is what result files record as the cut's `kind`."""

    PLAN = "plan"  # a router mask on the loaded base
    CHECKPOINT = "checkpoint"  # a pruned model folder, loaded on its own
    BASE = "base"  # the base itself (the reference row)


@dataclass
class Cut:
    """The model under test. Use `with cut.active(): cut.model(...)`."""

    name: str
    kind: CutKind
    model: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)  # domain, criterion, n_experts, top_k, path
    _activate: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    kept: tuple[tuple[int, ...], ...] | None = None
    adapter: MoEAdapter | None = None
    router_rows: list | None = None  # a healed plan's replacement rows (RouterRows per MoE layer)

    def active(self) -> contextlib.AbstractContextManager:
        return self._activate()

    @contextlib.contextmanager
    def standalone(self) -> Iterator[torch.nn.Module]:
        """A cut model that can run at the same time as its base (assisted generation needs both):
        for a mask, a masked twin of the base that shares every weight but the routers' (so no second
        copy of the model is held); for a checkpoint, the checkpoint itself."""
        if self.kind != CutKind.PLAN:
            yield self.model
            return
        shared = {id(t): t for t in itertools.chain(self.model.parameters(), self.model.buffers())}
        for _, block in self.adapter.moe_blocks(self.model):
            for t in itertools.chain(self.adapter.router(block).parameters(), self.adapter.router(block).buffers()):
                shared.pop(id(t), None)  # the mask edits the routers: the twin gets its own
        draft = copy.deepcopy(self.model, shared)
        with self.adapter.router_mask(draft, self.kept, self.router_rows):
            yield draft
        del draft


def plan_cut(base: LoadedModel, plan: PrunePlan, name: str = "", router_rows=None) -> Cut:
    """A plan as a router mask on the loaded base (no weights copied); `router_rows` (RouterRows per MoE
    layer) make it the healed cut."""
    from moeprint.select.plan import model_signature, validate_plan

    validate_plan(plan, model_signature(base.model.config.to_dict()))
    kept = plan.kept
    info = {
        "domain": plan.domain,
        "criterion": plan.criterion,
        "n_experts": plan.n_experts,
        "top_k": min(base.top_k, plan.n_experts),
        "num_experts": base.num_experts,
    }
    if router_rows is not None:
        info["healed"] = (plan.extra.get("heal") or {}).get("objective", "router rows")
    return Cut(
        name=name or f"{plan.domain}-{plan.criterion}-{plan.n_experts}",
        kind=CutKind.PLAN,
        model=base.model,
        info=info,
        _activate=lambda: base.adapter.router_mask(base.model, kept, router_rows),
        kept=kept,
        adapter=base.adapter,
        router_rows=router_rows,
    )


def check_checkpoint_of(checkpoint_dir: str | Path, model_path: str | Path, config: dict[str, Any]) -> None:
    """Refuse a checkpoint that is not a cut of `model_path`: another architecture or shape, or (when its
    moeprint_plan.json records it) pruned from other weights. Reads configs and the plan only."""
    from moeprint.io.identity import check_same_model
    from moeprint.select.plan import model_signature

    ck_config = load_config_dict(checkpoint_dir)
    adapter_for(ck_config)
    mine, theirs = model_signature(config), model_signature(ck_config)
    for key in ("architecture", "num_layers"):
        if getattr(mine, key) != getattr(theirs, key):
            raise MoeprintError(
                f"{checkpoint_dir} is not a cut of {model_path}: its {key} is {getattr(theirs, key)!r}, "
                f"the base model's {getattr(mine, key)!r}."
            )
    if ck_config.get("hidden_size") != config.get("hidden_size"):
        raise MoeprintError(
            f"{checkpoint_dir} is not a cut of {model_path}: hidden size "
            f"{ck_config.get('hidden_size')} vs {config.get('hidden_size')}."
        )
    record = read_checkpoint_record(checkpoint_dir)
    if record is not None:
        check_same_model(record.source_model_sha256, model_path, f"checkpoint {checkpoint_dir}")


@dataclass(frozen=True)
class BaseFacts:
    """What a checkpoint cut needs of its base, kept when the base itself has been released."""

    vocab_size: int
    num_experts: int
    dtype: torch.dtype

    @classmethod
    def of(cls, base: LoadedModel) -> BaseFacts:
        return cls(int(base.model.config.vocab_size), base.num_experts, base.model.dtype)


def checkpoint_cut(
    base: LoadedModel | BaseFacts, checkpoint_dir: str | Path, load: LoadSettings = LoadSettings()
) -> Cut:
    """A pruned checkpoint loaded directly, placed by `load` in the base's dtype; its plan
    (moeprint_plan.json) names domain and criterion."""
    facts = base if isinstance(base, BaseFacts) else BaseFacts.of(base)
    checkpoint_dir = Path(checkpoint_dir)
    dtype = str(facts.dtype).removeprefix("torch.")
    loaded = load_model(
        checkpoint_dir, LoadSettings(load.device, dtype if dtype in ("bfloat16", "float32") else "auto")
    )
    if loaded.model.config.vocab_size != facts.vocab_size:
        raise MoeprintError(f"{checkpoint_dir} has a different vocabulary from the base model; it is not a cut of it.")
    record = read_checkpoint_record(checkpoint_dir)
    info = {
        "domain": record.domain if record else "",
        "criterion": record.criterion if record else "",
        "n_experts": loaded.num_experts,
        "top_k": loaded.top_k,
        "num_experts": facts.num_experts,
        "path": str(checkpoint_dir),
    }
    return Cut(name=checkpoint_dir.name, kind=CutKind.CHECKPOINT, model=loaded.model, info=info)


def base_cut(base: LoadedModel) -> Cut:
    """The base itself as a 'cut' (every expert kept): the reference every retention number is relative to."""
    info = {
        "domain": "",
        "criterion": "base",
        "n_experts": base.num_experts,
        "top_k": base.top_k,
        "num_experts": base.num_experts,
    }
    return Cut(name="base", kind=CutKind.BASE, model=base.model, info=info)
