"""What moeprint needs to know about one MoE architecture, declared as data.

An adapter names the config keys, module paths and tensor-name templates of one model family
and converts its router output to the standard form (topk_ids (T,k), topk_weights (T,k), logits (T,E)).
Nothing outside `moeprint.adapters` names an architecture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from moeprint.adapters.descriptors import ChatFormat, KnownCheckpoint, QuantLayout
from moeprint.errors import MoeprintError


@dataclass(frozen=True)
class ExpertTensor:
    """A per-layer tensor whose `axis` indexes experts. `template` has a `{layer}` field."""

    template: str
    axis: int = 0


@dataclass(frozen=True)
class PerExpertName:
    """One per-expert tensor of the on-disk layout (`...experts.{expert}.w1.weight`): kept experts are
    renamed to their new id, dropped ones are left out."""

    template: str  # with `{layer}` and `{expert}` fields
    layer: int  # real decoder layer index
    slot: int  # index into the plan's kept lists (MoE layers only)
    expert: int

    def renamed(self, new_expert: int) -> str:
        return self.template.format(layer=self.layer, expert=new_expert)


@dataclass(frozen=True)
class RouterBuffer:
    """A per-expert tensor the routing reads besides the router weight (a selection-only correction bias):
    passed to `logits_to_topk` as `keyword`, found at `path` under the router (or under the MoE block when
    `on_block`), its expert axis `axis`. Masks slice it to the kept experts, like the router weight."""

    keyword: str
    path: str
    axis: int = 0
    on_block: bool = False


@dataclass(frozen=True)
class ExpertGroups:
    """Group-limited routing (DeepSeek-V3 style): experts form `n_group` contiguous groups; a token first picks
    the `topk_group` groups whose best two experts score highest, then its top-k inside them. A pruned model
    keeps the same groups only if every group keeps the same number of experts, at least two (the group score
    sums a group's best two) and enough that `topk_group` groups still hold top-k experts."""

    n_group: int
    topk_group: int
    num_experts: int  # of the model the groups were read from
    min_per_group: int = 2

    def group_of(self, expert: int) -> int:
        return expert // (self.num_experts // self.n_group)

    def budget_error(self, n: int, top_k: int) -> str | None:
        """Why keeping `n` experts per layer cannot keep this routing, or None."""
        where = f"n_group={self.n_group}, topk_group={self.topk_group}"
        if n % self.n_group:
            return f"{n} experts cannot be split equally over the {self.n_group} expert groups ({where})."
        per_group = n // self.n_group
        if per_group < self.min_per_group:
            return (
                f"{n} experts leave {per_group} per group; the router scores a group by its best "
                f"{self.min_per_group} experts, so keep at least {self.min_per_group * self.n_group} ({where})."
            )
        if self.topk_group * per_group < min(top_k, n):
            return (
                f"{n} experts leave {per_group} per group: the {self.topk_group} groups a token may use hold "
                f"{self.topk_group * per_group}, fewer than top-k={top_k} ({where})."
            )
        return None

    def layer_error(self, kept: Sequence[int]) -> str | None:
        """Why one layer's kept ids do not keep the same number of experts in every group, or None."""
        counts = [0] * self.n_group
        for e in kept:
            counts[self.group_of(e)] += 1
        if len(set(counts)) > 1:
            return f"keeps {counts} experts in its {self.n_group} expert groups; every group must keep the same number."
        return None

    def select(self, ranked: Sequence[int], n: int) -> list[int] | None:
        """The first n // n_group ids of each group, in ranking order (None if the ranking runs short)."""
        per_group, counts, out = n // self.n_group, [0] * self.n_group, []
        for e in ranked:
            g = self.group_of(e)
            if counts[g] < per_group:
                counts[g] += 1
                out.append(e)
        return out if len(out) == n else None


@dataclass(frozen=True)
class MoEAdapter:
    name: str
    architectures: tuple[str, ...]  # config.architectures[0] values this adapter serves
    model_type: str
    # config keys
    num_layers_key: str
    num_experts_key: str
    top_k_key: str
    # module paths, relative to the model and to one decoder layer
    layers_path: str  # e.g. "model.layers"
    moe_attr: str  # e.g. "mlp"
    router_attr: str  # relative to the MoE block, e.g. "router"
    experts_attr: str  # relative to the MoE block, e.g. "experts"
    # tensors with an expert axis (sliced by prune); router tensors are sliced on axis 0 as well.
    # Templates of every layout a checkpoint may use are listed; only names present in it matter.
    # The first expert tensor and any router tensor must exist for every MoE layer (fused layouts).
    expert_tensors: tuple[ExpertTensor, ...]
    router_tensors: tuple[ExpertTensor, ...]
    # architecture-specific conversions
    router_output_to_topk: Callable[[Any, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
    logits_to_topk: Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (logits (N,E), top_k, **routing options)
    expert_forward: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor] | None
    # MoE block class names whose router module is never called (fused kernels); their forward
    # output's second element is the router logits (N, E).
    fused_moe_classes: tuple[str, ...] = ()
    # how checkpoints of the family store quantised expert weights (None: float only)
    quantisation: QuantLayout | None = None
    # the chat format whose channels label generated tokens think / answer (None: every token is `generated`)
    chat_format: ChatFormat | None = None
    # published checkpoints of the family, recognised by shape
    checkpoints: tuple[KnownCheckpoint, ...] = ()
    # one tensor per expert on disk (`{layer}`, `{expert}` fields): dropped or renumbered by prune
    per_expert_tensors: tuple[str, ...] = ()
    # other config keys that hold the expert count (aliases written by some transformers versions)
    num_experts_aliases: tuple[str, ...] = ()
    # (keyword of logits_to_topk, config key, default): routing options read from the config
    routing_options: tuple[tuple[str, str, Any], ...] = ()
    # (config, layer) -> whether decoder layer `layer` is a MoE layer (None: every layer is)
    is_moe_layer: Callable[[Any, int], bool] | None = None
    # per-expert tensors the routing reads besides the router weight (e.g. the selection-only
    # `e_score_correction_bias`): masks slice them to the kept experts like the router weight
    router_buffers: tuple[RouterBuffer, ...] = ()
    # the router casts its weights to the input's dtype (ERNIE-4.5); the mask hook does the same
    weights_in_input_dtype: bool = False
    # routers whose output is not (logits, weights, ids) (Llama-4: (scores (N,E), logits (N,E))): builds the mask
    # hook's return from the kept logits (N,n), top-k, the kept ids (n,) and E, as the pruned router computes it
    masked_router_output: Callable[[torch.Tensor, int, torch.Tensor, int], Any] | None = None
    # (n_group key, topk_group key): group-limited routing; plans keep an equal budget per group
    group_keys: tuple[str, str] | None = None
    # multimodal configs nest the language model's keys (e.g. "text_config"); read there when present
    config_section: str | None = None
    # model types of in-memory configs that name no architecture (a text config loaded from a multimodal folder)
    text_model_types: tuple[str, ...] = ()
    # (tensor-name prefix, config key of its layer count): multi-token-prediction modules that transformers never
    # loads. They hold experts that no recording ranks, so a cut leaves them out and sets the count to 0 rather
    # than ship MoE layers whose expert count contradicts the config. `{layer}` counts on from the last layer.
    mtp: tuple[str, str] | None = None

    @property
    def quantized_expert_suffixes(self) -> tuple[str, ...]:
        """Suffixes the quantised layout adds to an expert tensor's float name (none without one)."""
        return self.quantisation.suffixes if self.quantisation is not None else ()

    # ---- config -------------------------------------------------------------------------
    def text_config(self, config: Any) -> Any:
        """The part of `config` that holds the language model's keys (the config itself unless nested)."""
        if self.config_section is not None:
            section = config_get(config, self.config_section)
            if section is not None:
                return section
        return config

    def moe_layers(self, config: Any) -> list[int]:
        """Indices of the decoder layers that hold a MoE block (dense layers are skipped)."""
        config = self.text_config(config)
        layers = range(int(_cfg(config, self.num_layers_key)))
        if self.is_moe_layer is None:
            return list(layers)
        return [i for i in layers if self.is_moe_layer(config, i)]

    def num_layers(self, config: Any) -> int:
        """Number of MoE layers: what plans, rankings and traces count (`layer_i` is the i-th MoE layer)."""
        return len(self.moe_layers(config))

    def num_experts(self, config: Any) -> int:
        return int(_cfg(self.text_config(config), self.num_experts_key, *self.num_experts_aliases))

    def top_k(self, config: Any) -> int:
        return int(_cfg(self.text_config(config), self.top_k_key))

    def expert_groups(self, config: Any) -> ExpertGroups | None:
        """The group-limited routing of `config`, or None for families without groups."""
        if self.group_keys is None:
            return None
        text = self.text_config(config)
        n_group, topk_group = (int(config_get(text, key, 1)) for key in self.group_keys)
        return ExpertGroups(n_group, topk_group, self.num_experts(config))

    def routing(self, config: Any) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """logits (N,E), top_k, **router buffers -> (topk_ids (N,k), topk_weights (N,k)), exactly as this model
        routes (buffers: `router_buffers` over the same E experts)."""
        text = self.text_config(config)
        options = {kw: config_get(text, key, default) for kw, key, default in self.routing_options}
        return lambda logits, top_k, **buffers: self.logits_to_topk(logits, top_k, **options, **buffers)

    def pruned_config(self, config: dict[str, Any], n_experts: int) -> dict[str, Any]:
        """A config dict for a model keeping `n_experts` per layer (top-k capped at n_experts)."""
        out = dict(config)
        nested = self.config_section is not None and isinstance(out.get(self.config_section), dict)
        text = dict(out[self.config_section]) if nested else out
        top_k = int(text[self.top_k_key])
        for key in (self.num_experts_key, *self.num_experts_aliases):
            if key == self.num_experts_key or key in text:
                text[key] = int(n_experts)
        text[self.top_k_key] = min(top_k, int(n_experts))
        if self.mtp is not None and text.get(self.mtp[1]):
            text[self.mtp[1]] = 0  # their tensors are left out (mtp_prefixes)
        if nested:
            out[self.config_section] = text
        return out

    def mtp_prefixes(self, config: Any) -> tuple[str, ...]:
        """Name prefixes of the multi-token-prediction tensors a cut leaves out (none for most families)."""
        if self.mtp is None:
            return ()
        template, key = self.mtp
        text = self.text_config(config)
        count = int(config_get(text, key, 0))
        if count == 0 or "{layer}" not in template:
            return (template,) if count else ()
        first = int(_cfg(text, self.num_layers_key))
        return tuple(template.format(layer=first + i) for i in range(count))

    # ---- modules ------------------------------------------------------------------------
    def moe_blocks(self, model: torch.nn.Module) -> list[tuple[int, torch.nn.Module]]:
        """(layer index, MoE block) for every MoE layer, in order."""
        layers = _get_path(model, self.layers_path)
        moe = set(self.moe_layers(model.config)) if self.is_moe_layer is not None else range(len(layers))
        blocks = [
            (i, getattr(layer, self.moe_attr))
            for i, layer in enumerate(layers)
            if i in moe and hasattr(layer, self.moe_attr)
        ]
        if not blocks:
            raise MoeprintError(f"no MoE blocks found at {self.layers_path}[i].{self.moe_attr}.")
        return blocks

    def router(self, block: torch.nn.Module) -> torch.nn.Module:
        return getattr(block, self.router_attr)

    def experts(self, block: torch.nn.Module) -> torch.nn.Module:
        return getattr(block, self.experts_attr)

    def router_buffer(self, block: torch.nn.Module, buffer: RouterBuffer) -> torch.Tensor:
        return _get_path(block if buffer.on_block else self.router(block), buffer.path)

    def is_fused(self, block: torch.nn.Module) -> bool:
        return type(block).__name__ in self.fused_moe_classes

    # ---- tensor names -------------------------------------------------------------------
    def expert_axis_tensors(self, layers: int | Sequence[int]) -> dict[str, tuple[int, int]]:
        """Every tensor name with an expert axis -> (slot, axis), quantized variants included.
        `layers`: the MoE layers' real indices (`moe_layers(config)`), or a count when all layers are MoE;
        slot indexes the plan's kept lists."""
        layers = range(layers) if isinstance(layers, int) else layers
        out: dict[str, tuple[int, int]] = {}
        for slot, layer in enumerate(layers):
            for t in self.expert_tensors:
                name = t.template.format(layer=layer)
                out[name] = (slot, t.axis)
                for suffix in self.quantized_expert_suffixes:
                    out[name + suffix] = (slot, t.axis)
            for t in self.router_tensors:
                out[t.template.format(layer=layer)] = (slot, t.axis)
        return out

    def per_expert_tensor_names(self, layers: Sequence[int], num_experts: int) -> dict[str, PerExpertName]:
        """Every per-expert tensor name of the on-disk layout -> where it belongs."""
        return {
            template.format(layer=layer, expert=e): PerExpertName(template, layer, slot, e)
            for slot, layer in enumerate(layers)
            for template in self.per_expert_tensors
            for e in range(num_experts)
        }

    # ---- masking ------------------------------------------------------------------------
    @contextlib.contextmanager
    def router_mask(
        self,
        model: torch.nn.Module,
        kept: Sequence[Sequence[int]],
        router_rows: Sequence[RouterRows | None] | None = None,
    ) -> Iterator[None]:
        """Within the block, the model routes exactly as the pruned model does; restored on exit.

        Each router computes its logits from the kept rows only (weight[kept], bias[kept], gathered once,
        in ascending kept order), routes with the family's own top-k and normalisation over those n logits,
        and hands the experts the chosen ids mapped back to the original ids. Since kept ids are ascending,
        the experts run the same per-expert matrix products, in the same order, as the pruned model's
        renumbered experts: masked and pruned logits are equal bit for bit. Slicing the logits of a full
        (N,E) router product instead is not: a different matrix shape takes a different kernel blocking.
        `router_rows[i]` (optional) replaces layer i's kept router rows (a healed router), in ascending kept order.
        Fused MoE blocks (gpt-oss MXFP4 GPU kernels) never call the router module: there the kept rows are
        written into the router in place and dropped experts get a bias of -inf (equal in routing, not
        bitwise; documented in docs/prune.md).
        """
        blocks = self.moe_blocks(model)
        if len(kept) != len(blocks):
            raise MoeprintError(f"plan covers {len(kept)} layers but the model has {len(blocks)} MoE layers.")
        if router_rows is not None and len(router_rows) != len(blocks):
            raise MoeprintError(f"router rows cover {len(router_rows)} layers but the model has {len(blocks)}.")
        route = self.routing(model.config)
        top_k = self.top_k(model.config)
        n_total = self.num_experts(model.config)
        groups = self.expert_groups(model.config)
        with contextlib.ExitStack() as stack:
            for i, ((_, block), keep) in enumerate(zip(blocks, kept)):
                rows = router_rows[i] if router_rows is not None else None
                if len(keep) == n_total and rows is None:
                    continue  # nothing dropped or replaced: the model is untouched
                if len(set(keep)) != len(keep) or (rows is not None and list(keep) != sorted(keep)):
                    raise MoeprintError(
                        f"MoE layer {i}: kept expert ids must be unique (and ascending with router rows)."
                    )
                if groups is not None:
                    error = groups.budget_error(len(keep), top_k) or groups.layer_error(keep)
                    if error:
                        raise MoeprintError(f"MoE layer {i}: {error}")
                keep = sorted(keep)  # the pruned model's order: bitwise equality needs it
                router = self.router(block)
                keep_ids = torch.tensor(list(keep), dtype=torch.long, device=router.weight.device)
                if rows is None:
                    rows = RouterRows.gather(router, keep_ids)
                if self.router_buffers and not rows.buffers:  # healed rows replace the weights, not the buffers
                    rows = RouterRows(rows.weight, rows.bias, self._kept_buffers(block, keep_ids))
                rows = rows.to(router.weight)
                if self.is_fused(block):
                    stack.enter_context(_rows_written_in_place(router, keep_ids, rows))
                else:
                    hook = _kept_rows_routing(
                        route,
                        keep_ids,
                        rows,
                        min(top_k, len(keep)),
                        n_total,
                        self.weights_in_input_dtype,
                        self.masked_router_output,
                    )
                    # prepend: every other hook on the router (recording) sees the masked routing
                    stack.callback(router.register_forward_hook(hook, prepend=True).remove)
            yield

    def _kept_buffers(self, block: torch.nn.Module, keep_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {
                b.keyword: self.router_buffer(block, b).index_select(b.axis, keep_ids).contiguous()  # (n,) or (1, n)
                for b in self.router_buffers
            }


@dataclass(frozen=True)
class RouterRows:
    """The router rows of one MoE layer's kept experts, in kept order: weight (n,H), bias (n) or None, and the
    routing's per-expert tensors (`MoEAdapter.router_buffers` by keyword, (n,) or (1, n)), in their own dtype."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def gather(cls, router: torch.nn.Module, keep_ids: torch.Tensor) -> RouterRows:
        with torch.no_grad():
            bias = getattr(router, "bias", None)
            return cls(
                router.weight.index_select(0, keep_ids).contiguous(),  # (n, H): what the pruned router holds
                None if bias is None else bias.index_select(0, keep_ids).contiguous(),  # (n,)
            )

    def to(self, like: torch.Tensor) -> RouterRows:
        bias = None if self.bias is None else self.bias.to(device=like.device, dtype=like.dtype)
        buffers = {name: b.to(device=like.device) for name, b in self.buffers.items()}
        return RouterRows(self.weight.to(device=like.device, dtype=like.dtype), bias, buffers)


def _kept_rows_routing(
    route, keep_ids: torch.Tensor, rows: RouterRows, top_k: int, n_total: int, cast: bool, output_form=None
):
    def hook(module: torch.nn.Module, args: tuple, output: Any) -> tuple[torch.Tensor, ...]:
        hidden = args[0].reshape(-1, rows.weight.shape[1])  # (N, H)
        # in the router's dtype, as routers that keep their weight in float32 (DeepSeek-V3) cast the input
        logits_kept = torch.nn.functional.linear(hidden.to(rows.weight.dtype), rows.weight, rows.bias)  # (N, n)
        if output_form is not None:
            return output_form(logits_kept, top_k, keep_ids, n_total)
        ids_kept, weights = route(logits_kept, top_k, **rows.buffers)  # (N, k') ids among the kept experts
        if cast:
            weights = weights.to(args[0].dtype)
        masked = logits_kept.new_full((hidden.shape[0], n_total), float("-inf"))
        masked[:, keep_ids] = logits_kept  # (N, E): dropped experts at -inf, for recording
        return masked, weights, keep_ids[ids_kept]

    return hook


@contextlib.contextmanager
def _rows_written_in_place(router: torch.nn.Module, keep_ids: torch.Tensor, rows: RouterRows) -> Iterator[None]:
    if router.bias is None:
        raise MoeprintError("a fused MoE block without a router bias cannot be masked.")
    saved_weight, saved_bias = router.weight.detach().clone(), router.bias.detach().clone()
    try:
        with torch.no_grad():
            router.weight[keep_ids] = rows.weight
            router.bias.fill_(float("-inf"))
            router.bias[keep_ids] = rows.bias if rows.bias is not None else saved_bias[keep_ids]
        yield
    finally:
        with torch.no_grad():
            router.weight.copy_(saved_weight)
            router.bias.copy_(saved_bias)


def config_get(config: Any, key: str, default: Any = None) -> Any:
    value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
    return default if value is None else value


def _cfg(config: Any, key: str, *aliases: str) -> Any:
    for k in (key, *aliases):
        value = config_get(config, k)
        if value is not None:
            return value
    raise MoeprintError(f"model config has no `{key}`; is this a Mixture-of-Experts model?")


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not hasattr(obj, part):
            raise MoeprintError(f"model has no module `{path}`; it does not look like the declared architecture.")
        obj = getattr(obj, part)
    return obj
