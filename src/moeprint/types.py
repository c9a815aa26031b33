"""Frozen records passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: prompt loading and CLI validation stay free of the torch import
    import torch

# Token segments. A recorded or imported trace row carries one of these in its `segment` column.
# "think"/"answer" are the analysis and final channels of a chat format with channels (`adapters.ChatFormat`);
# "generated" is a generated token of no known channel (models without channels, message terminators).
SEGMENTS = ("prompt", "think", "answer", "generated")
# Every domain (or every segment) pooled: the label of pooled fingerprints, rankings and results, and the
# domain of general prompts that belong to no single domain. Defined here only; everything else names it.
ALL = "all"


@dataclass(frozen=True)
class PromptRecord:
    """One prompt from any source. `messages` is a chat (list of {role, content}); `text` is raw text."""

    prompt_id: str
    domain: str
    source: str
    category: str = ""
    messages: tuple[dict[str, str], ...] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a PromptRecord has exactly one of `messages` and `text`")


class RouterCapture(NamedTuple):
    """One MoE layer's routing in one forward call, in the standard router form, as the record hooks capture
    it (on the model's device, in the model's dtypes) and the runner turns it into trace columns.
    A NamedTuple, not a frozen dataclass: the hooks build one per layer and call, and a frozen dataclass costs
    about 1 us more to build (a few % of a small router call, see bench/record.py).

    Rows are every token of the call (N = B*S at prefill, B per decode step); the runner drops padding.
    Weights are exactly what the model multiplies the expert outputs by. Field names are the trace columns.
    """

    ids: torch.Tensor  # (N, k) int
    weights: torch.Tensor  # (N, k) float
    logits: torch.Tensor | None = None  # (N, E), only when recording logits
    expert_norms: torch.Tensor | None = None  # (N, k) float32, ||f_j(x)|| of each selected expert

    def columns(self) -> dict[str, torch.Tensor]:
        """The captured tensors by trace column name, absent ones left out."""
        out = {"ids": self.ids, "weights": self.weights}
        if self.logits is not None:
            out["logits"] = self.logits
        if self.expert_norms is not None:
            out["expert_norms"] = self.expert_norms
        return out


BASE_NUM_EXPERTS = "base_num_experts"  # its key inside the plan JSON's `extra`


@dataclass(frozen=True)
class ModelSignature:
    """What a plan must agree with: the architecture and routing geometry of its base model."""

    architecture: str
    num_layers: int
    num_experts: int
    top_k: int
    expert_groups: tuple[int, int] | None = None  # (n_group, topk_group) with group-limited routing


@dataclass(frozen=True)
class PrunePlan:
    """Which experts to keep in every MoE layer. `kept[layer]` lists old expert ids, ascending.

    `base_num_experts` (the base model's experts per layer, when known) is stored in the plan JSON as
    `extra.base_num_experts`, where plans have always kept it; `extra` holds everything else."""

    base_model: str
    architecture: str
    domain: str
    criterion: str
    n_experts: int
    top_k: int
    kept: tuple[tuple[int, ...], ...]
    extra: dict[str, Any] = field(default_factory=dict)
    base_num_experts: int | None = None

    def __post_init__(self) -> None:
        if BASE_NUM_EXPERTS in self.extra:  # one home: the field (the JSON key is written by to_json)
            raise ValueError("pass base_num_experts as the PrunePlan field, not inside `extra`")

    @property
    def num_layers(self) -> int:
        return len(self.kept)

    @property
    def effective_top_k(self) -> int:
        return min(self.top_k, self.n_experts)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "architecture": self.architecture,
            "domain": self.domain,
            "criterion": self.criterion,
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "kept": [list(k) for k in self.kept],
            **({"extra": extra} if (extra := self.json_extra()) else {}),
        }

    def json_extra(self) -> dict[str, Any]:
        """`extra` as the plan JSON stores it: with `base_num_experts` first, as plans always wrote it."""
        base = {} if self.base_num_experts is None else {BASE_NUM_EXPERTS: self.base_num_experts}
        return {**base, **self.extra}
