"""Frozen records passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: prompt loading and CLI validation stay free of the torch import
    import torch

# Token segments. A recorded or imported trace row carries one of these in its `segment` column.
# "think"/"answer" are gpt-oss's analysis and final channels; "generated" is a generated token whose
# channel is unknown (models without channels).
SEGMENTS = ("prompt", "think", "answer", "generated")


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


@dataclass(frozen=True)
class PrunePlan:
    """Which experts to keep in every MoE layer. `kept[layer]` lists old expert ids, ascending."""

    base_model: str
    architecture: str
    domain: str
    criterion: str
    n_experts: int
    top_k: int
    kept: tuple[tuple[int, ...], ...]
    extra: dict[str, Any] = field(default_factory=dict)

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
            **({"extra": self.extra} if self.extra else {}),
        }
