"""Registry of MoE architectures, keyed by `config.architectures[0]`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moeprint.adapters.base import ExpertTensor, MoEAdapter, PerExpertName
from moeprint.adapters.deepseek_v3 import DEEPSEEK_V3
from moeprint.adapters.descriptors import ChatFormat, KnownCheckpoint, QuantLayout
from moeprint.adapters.ernie4_5_moe import ERNIE4_5_MOE
from moeprint.adapters.glm4_moe import GLM4_MOE
from moeprint.adapters.gpt_oss import GPT_OSS
from moeprint.adapters.llama4 import LLAMA4
from moeprint.adapters.minimax_m2 import MINIMAX_M2
from moeprint.adapters.mixtral import MIXTRAL
from moeprint.adapters.olmoe import OLMOE
from moeprint.adapters.qwen3_5_moe import QWEN3_5_MOE
from moeprint.adapters.qwen3_moe import QWEN3_MOE
from moeprint.errors import MoeprintError
from moeprint.io.atomic import read_json

_ALL = (GPT_OSS, MIXTRAL, QWEN3_MOE, OLMOE, DEEPSEEK_V3, GLM4_MOE, QWEN3_5_MOE, ERNIE4_5_MOE, MINIMAX_M2, LLAMA4)
ADAPTERS: dict[str, MoEAdapter] = {arch: a for a in _ALL for arch in a.architectures}
_BY_TEXT_MODEL_TYPE = {t: a.architectures[0] for a in _ALL for t in a.text_model_types}
# every quantised layout and chat format some family declares, each once, in registry order
QUANT_LAYOUTS: tuple[QuantLayout, ...] = tuple(
    {id(a.quantisation): a.quantisation for a in _ALL if a.quantisation}.values()
)
CHAT_FORMATS: tuple[ChatFormat, ...] = tuple({id(a.chat_format): a.chat_format for a in _ALL if a.chat_format}.values())

__all__ = [
    "ADAPTERS",
    "CHAT_FORMATS",
    "QUANT_LAYOUTS",
    "ChatFormat",
    "ExpertTensor",
    "KnownCheckpoint",
    "MoEAdapter",
    "PerExpertName",
    "QuantLayout",
    "adapter_for",
    "chat_format_for_vocab",
    "load_config_dict",
    "published_routing_source",
    "quantisation_for",
]


def load_config_dict(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a local model folder, with one clear error for each way it can be missing."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise MoeprintError(f"model folder {model_dir} does not exist (moeprint reads local folders only).")
    if not (model_dir / "config.json").exists():
        raise MoeprintError(f"{model_dir} has no config.json; it is not a Hugging Face model folder.")
    config = read_json(model_dir / "config.json")
    if not isinstance(config, dict):
        raise MoeprintError(f"{model_dir / 'config.json'} is not a JSON object.")
    return config


def adapter_for(config: Any) -> MoEAdapter:
    """The adapter for a config (dict or PretrainedConfig); a clear error for dense or unknown models."""
    archs = config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)
    arch = archs[0] if archs else None
    if arch is None:  # a text config loaded from a multimodal folder names no architecture, only its type
        model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
        arch = _BY_TEXT_MODEL_TYPE.get(model_type)
    if arch in ADAPTERS:
        adapter = ADAPTERS[arch]
        adapter.num_experts(config)  # raises for a config without experts
        return adapter
    known = ", ".join(sorted(ADAPTERS))
    if arch is None:
        raise MoeprintError(f"model config names no architecture; supported: {known}.")
    raise MoeprintError(f"{arch} is not a supported Mixture-of-Experts architecture (supported: {known}).")


def quantisation_for(config: dict[str, Any]) -> QuantLayout | None:
    """The declared quantised layout a config dict says its checkpoint uses (None: float, or undeclared)."""
    return next((q for q in QUANT_LAYOUTS if q.describes(config)), None)


@contextmanager
def quantised_loading(config: dict[str, Any]) -> Iterator[None]:
    """The load-time hook of the quantised layout `config` declares (`QuantLayout.loading`), else nothing."""
    layout = quantisation_for(config)
    if layout is None or layout.loading is None:
        yield
        return
    with layout.loading():
        yield


def chat_format_for_vocab(vocab: dict[str, int]) -> ChatFormat | None:
    """The declared chat format whose channel markers a tokenizer's vocabulary holds, or None.
    Keyed on the tokenizer, not the architecture: the markers are what the model writes."""
    return next((f for f in CHAT_FORMATS if f.in_vocab(vocab)), None)


def published_routing_source(name: str) -> tuple[MoEAdapter, KnownCheckpoint]:
    """The family and checkpoint a published routing data set (`KnownCheckpoint.published_routing`) was recorded on."""
    for adapter in _ALL:
        for checkpoint in adapter.checkpoints:
            if name in checkpoint.published_routing:
                return adapter, checkpoint
    raise MoeprintError(f"no adapter declares the published routing data {name!r}.")
