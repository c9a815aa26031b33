"""The one model loader: every stage that runs a model (record, mask, evaluate, sweep, greedy-plan,
the card's example generations, testbed fitness) loads it here, so device placement, dtype and the
"safetensors only, no remote code" rule live in one place.

Placement (`LoadSettings.device`):
  auto    every visible GPU if there is one (`device_map="auto"`: layers spread over the GPUs, the rest
          on the CPU), else the CPU
  cpu     the CPU
  cuda    every visible GPU (`device_map="auto"`), for models larger than one GPU
  cuda:N  GPU N only
Dtype (`LoadSettings.dtype`): auto (the checkpoint's own; quantised experts stay quantised where transformers
has GPU kernels for their layout and are dequantised to bf16 elsewhere), bfloat16 or float32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moeprint.adapters import load_config_dict, quantised_loading
from moeprint.errors import MoeprintError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
DTYPES = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class LoadSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | bfloat16 | float32

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise MoeprintError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}.")


def check_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device or ""):
        raise MoeprintError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}.")
    return device


CPU_FLOAT32 = LoadSettings("cpu", "float32")  # the small models the tests and the testbed use


def device_map(device: str) -> Any:
    """The `device_map` argument of from_pretrained for a `--device` value (checked against the machine)."""
    import torch

    check_device(device)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "auto" if gpus else {"": "cpu"}
    if device == "cpu":
        return {"": "cpu"}
    if not gpus:
        raise MoeprintError(f"--device {device}: this machine has no CUDA GPU (use --device cpu or auto).")
    if device == "cuda":
        return "auto"
    index = int(device.split(":")[1])
    if index >= gpus:
        raise MoeprintError(f"--device {device}: this machine has {gpus} GPU(s) (cuda:0..cuda:{gpus - 1}).")
    return {"": device}


def torch_dtype(dtype: str) -> Any:
    import torch

    return {"auto": "auto", "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise MoeprintError(f"cannot load the tokenizer from {model_dir} ({e.__class__.__name__}).") from None


def load_causal_lm(model_dir: str | Path, settings: LoadSettings = LoadSettings()):
    """A local causal LM folder in eval mode, placed and typed by `settings`, from safetensors only.

    `use_safetensors=True` makes transformers ignore a `pytorch_model.bin` beside the safetensors
    (a pickle), and refuse a folder that has only pickles."""
    from transformers import AutoModelForCausalLM

    placement = device_map(settings.device)
    try:
        with quantised_loading(_config_or_empty(model_dir)):
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir),
                dtype=torch_dtype(settings.dtype),
                device_map=placement,
                use_safetensors=True,
                trust_remote_code=False,
            )
    except MoeprintError:
        raise
    except Exception as e:  # corrupt or mismatched weights surface as many exception types
        raise MoeprintError(
            f"cannot load the model from {model_dir} ({e.__class__.__name__}: {_first_line(e)})."
        ) from None
    model.eval()
    return model


def _config_or_empty(model_dir) -> dict[str, Any]:
    """The folder's config for choosing a load hook; a missing or broken one is from_pretrained's to report."""
    try:
        return load_config_dict(model_dir)
    except MoeprintError:
        return {}


def input_device(model) -> Any:
    """Where a model's inputs go: the device of its input embeddings (the first stage under a device_map)."""
    return model.get_input_embeddings().weight.device


def context_length(model_or_config) -> int | None:
    """The model's context in tokens (`max_position_embeddings`), or None if it declares none."""
    config = getattr(model_or_config, "config", model_or_config)
    value = getattr(config, "max_position_embeddings", None)
    if value is None and isinstance(config, dict):
        value = config.get("max_position_embeddings")
    return int(value) if value else None


def check_context(n_tokens: int, limit: int | None, what: str) -> None:
    """One clear error when `n_tokens` do not fit a context of `limit` positions."""
    if limit is not None and n_tokens > limit:
        raise MoeprintError(
            f"{what} needs {n_tokens} positions but the model's context is {limit} "
            f"(max_position_embeddings); shorten it."
        )
