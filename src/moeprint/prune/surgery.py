"""Expert surgery: stream a safetensors checkpoint into a smaller one that keeps only the planned experts.

    headers (all shards)  ->  output specs (name, dtype, shape, how to make it)  ->  shard plan
        -> per tensor: read (only the kept rows of axis 0) -> slice / copy / dequantise -> ShardWriter
        -> index (last weight file) -> config, tokenizer & co, moeprint_plan.json, README.md
        -> rename the temp folder into place

Everything is decided from headers before a weight is read. Tensors with an expert axis (the
adapter's names, with its quantised layout's suffixes) are sliced; per-expert tensors (one per expert,
`...experts.{e}.w1.weight`) of kept experts are renamed to their new id and the others left out;
every other tensor is copied byte for byte. Quantised experts stay quantised unless `dtype="bf16"` asks
for decoded output (the adapter's `QuantLayout` decodes them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moeprint.adapters import PerExpertName, adapter_for, load_config_dict
from moeprint.adapters.base import RouterRows
from moeprint.adapters.descriptors import QuantLayout
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, json_exists, read_json
from moeprint.io.identity import model_sha256
from moeprint.io.shards import (
    DTYPE_CODES,
    DTYPES,
    INDEX_NAME,
    ShardReader,
    ShardWriter,
    TensorInfo,
    disk_full_guard,
    free_bytes,
    list_tensors,
    plan_shards,
    tensor_nbytes,
)
from moeprint.progress import bar
from moeprint.prune.naming import count_parameters
from moeprint.select.plan import model_signature, old_to_new, validate_plan
from moeprint.types import PrunePlan

DTYPE_CHOICES = ("keep", "bf16")
PLAN_FILE = "moeprint_plan.json"


@dataclass(frozen=True)
class CheckpointRecord:
    """A pruned checkpoint's `moeprint_plan.json` (written last by `prune_checkpoint`, read by
    `read_checkpoint_record` only): the plan's fields, where the cut came from and what it holds."""

    doc: dict[str, Any]  # the file as written: the plan's JSON + old_to_new, source_model, dtype, n_parameters...

    @property
    def domain(self) -> str:
        return str(self.doc.get("domain", ""))

    @property
    def criterion(self) -> str:
        return str(self.doc.get("criterion", ""))

    @property
    def n_experts(self) -> int | None:
        return self.doc.get("n_experts")

    @property
    def kept(self) -> list[list[int]] | None:
        return self.doc.get("kept")

    @property
    def n_parameters(self) -> int | None:
        return self.doc.get("n_parameters")

    @property
    def source_model_sha256(self) -> str | None:
        return self.doc.get("source_model_sha256")

    @property
    def extra(self) -> dict[str, Any]:
        extra = self.doc.get("extra")
        return extra if isinstance(extra, dict) else {}

    def missing(self, *keys: str) -> list[str]:
        return [k for k in keys if k not in self.doc]


def read_checkpoint_record(folder: str | Path) -> CheckpointRecord | None:
    """The checkpoint's plan record, None when the folder has none (a checkpoint not cut by moeprint)."""
    path = Path(folder) / PLAN_FILE
    if not json_exists(path):
        return None
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise MoeprintError(f"{path} is not a moeprint plan record (a JSON object).")
    return CheckpointRecord(doc)


# Files of a model folder that are never copied: weights (rewritten), pickles (never read), our own outputs.
SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".msgpack", ".h5", ".gguf")
SKIP_NAMES = {"config.json", INDEX_NAME, "pytorch_model.bin.index.json", PLAN_FILE, "README.md"}
# Files that describe the base, not the cut (training plots, training manifests, logs): a published cut
# carrying the base's loss curve would mislead its readers.
DESCRIBES_BASE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".log", ".csv")
DESCRIBES_BASE_NAMES = ("manifest.json", "training_manifest.json", "trainer_state.json", "training_args.json")


@dataclass(frozen=True)
class OutTensor:
    """One output tensor and how to make it from the input."""

    name: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    source: TensorInfo
    rows: tuple[int, ...] | None = None  # kept experts (expert axis 0)
    axis: int = 0
    scales: TensorInfo | None = None  # set when decoding quantised data (with `layout`)
    layout: QuantLayout | None = None

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


@dataclass(frozen=True)
class PruneResult:
    out_dir: Path
    n_parameters: int
    n_bytes: int
    n_shards: int


def output_specs(
    tensors: list[TensorInfo],
    plan: PrunePlan,
    expert_axes: dict[str, tuple[int, int]],
    dtype: str,
    per_expert: dict[str, PerExpertName] | None = None,
    dropped_prefixes: tuple[str, ...] = (),
    layout: QuantLayout | None = None,
) -> list[OutTensor]:
    """What the pruned checkpoint holds, computed from input headers only. `layout`: the adapter's quantised
    layout, decoded when `dtype="bf16"`."""
    by_name = {t.name: t for t in tensors}
    renumber = old_to_new(plan)
    specs: list[OutTensor] = []
    for t in tensors:
        if dropped_prefixes and t.name.startswith(dropped_prefixes):
            continue  # multi-token-prediction modules (the pruned config says there are none)
        rows, axis, shape = None, 0, t.shape
        if per_expert and t.name in per_expert:
            where = per_expert[t.name]
            new_id = renumber[where.slot].get(str(where.expert))
            if new_id is not None:  # a dropped expert's tensors are left out
                out_dtype = "BF16" if dtype == "bf16" and t.dtype in ("F32", "F16", "F64") else t.dtype
                specs.append(OutTensor(where.renamed(new_id), out_dtype, tuple(shape), t))
            continue
        if t.name in expert_axes:
            layer, axis = expert_axes[t.name]
            rows = plan.kept[layer]
            if t.shape[axis] != (plan.base_num_experts or t.shape[axis]):
                raise MoeprintError(
                    f"{t.name} has {t.shape[axis]} experts on axis {axis}; the plan expects "
                    f"{plan.base_num_experts}. Is the plan for another model?"
                )
            if max(rows) >= t.shape[axis]:
                raise MoeprintError(f"the plan keeps expert {max(rows)} but {t.name} has only {t.shape[axis]}.")
            shape = t.shape[:axis] + (len(rows),) + t.shape[axis + 1 :]
        decode = layout if dtype == "bf16" else None
        if decode and decode.is_scales(t.name, t.dtype):
            data_name = t.name.removesuffix(decode.scale_suffix) + decode.data_suffix
            if data_name in by_name:
                continue  # folded into the decoded weight
        if decode and decode.is_data(t.name, t.dtype):
            scales = by_name.get(decode.scales_name(t.name))
            if scales is None:
                raise MoeprintError(
                    f"{t.name} has no matching {decode.scale_suffix} tensor; cannot decode {decode.label}."
                )
            out_shape = decode.decoded_shape(tuple(shape))
            specs.append(OutTensor(decode.float_name(t.name), "BF16", out_shape, t, rows, axis, scales, decode))
            continue
        out_dtype = "BF16" if dtype == "bf16" and t.dtype in ("F32", "F16", "F64") else t.dtype
        specs.append(OutTensor(t.name, out_dtype, tuple(shape), t, rows, axis))
    return specs


def _make_tensor(reader: ShardReader, spec: OutTensor) -> torch.Tensor:
    rows = list(spec.rows) if spec.rows is not None else None
    if rows is not None and spec.axis != 0:  # no known layout has this; read whole, then select
        tensor = reader.read(spec.source).index_select(spec.axis, torch.tensor(rows))
    else:
        tensor = reader.read(spec.source, rows)
    if spec.layout is not None:
        scales = reader.read(spec.scales, rows)  # the kept experts' scales, expert axis 0 as the data
        return spec.layout.decode(tensor, scales, torch.bfloat16)  # spec.shape
    target = DTYPES[spec.dtype][0]
    return tensor if tensor.dtype == target else tensor.to(target)


def _patched_config(config: dict[str, Any], adapter, plan: PrunePlan, dtype: str) -> dict[str, Any]:
    out = adapter.pruned_config(config, plan.n_experts)
    if dtype == "bf16":
        # a decoded cut is float: the layout's config keys would make transformers look for quantised tensors
        for key in adapter.quantisation.config_keys if adapter.quantisation else ("quantization_config",):
            out.pop(key, None)
        for key in ("dtype", "torch_dtype"):
            if key in out or key == "dtype":
                out[key] = "bfloat16"
    return out


def prune_checkpoint(
    model_dir: str | Path,
    plan: PrunePlan,
    out_dir: str | Path,
    *,
    dtype: str = "keep",
    shard_size: int = 5 * 10**9,
    overwrite: bool = False,
    progress: bool = True,
    finalize: Callable[[Path, PruneResult], None] | None = None,
    router_rows: Sequence[RouterRows] | None = None,
) -> PruneResult:
    """Write a pruned copy of `model_dir` to `out_dir` (appears atomically). `finalize(tmp_dir, result)`
    runs inside the temp folder before the rename (the model card is written there).
    `router_rows` (a healed cut, per MoE layer): written in place of the kept router rows, cast to the
    checkpoint's router dtype; every other tensor is made exactly as without them."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    source, target = model_dir.resolve(), out_dir.resolve()
    if target == source or target in source.parents:  # --overwrite would delete the model being read
        raise MoeprintError(f"--out {out_dir} is (or contains) the input model {model_dir}; choose another folder.")
    if dtype not in DTYPE_CHOICES:
        raise MoeprintError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}.")
    config = load_config_dict(model_dir)
    adapter = adapter_for(config)
    validate_plan(plan, model_signature(config))
    tensors = list_tensors(model_dir)
    _check_layout(tensors, adapter, config)
    specs = model_output_specs(tensors, plan, adapter, config, dtype)
    replaced = _replaced_router_tensors(specs, adapter, config, router_rows)
    shard_of, n_shards = plan_shards([(s.name, s.nbytes) for s in specs], shard_size)
    n_bytes = sum(s.nbytes for s in specs)
    _check_free_space(out_dir, n_bytes)
    n_params = count_parameters(((s.name, s.dtype, s.shape) for s in specs), adapter.quantisation)
    result = PruneResult(out_dir, n_params, n_bytes, n_shards)

    with atomic_directory(out_dir, overwrite=overwrite, kind="checkpoint") as tmp:
        writer = ShardWriter(tmp, shard_of, n_shards)
        with (
            bar(f"pruning -> {out_dir.name}", n_bytes, progress, bytes=True, transient=True) as advance,
            ShardReader(model_dir) as reader,
        ):
            for spec in specs:
                tensor = replaced[spec.name] if spec.name in replaced else _make_tensor(reader, spec)
                if tuple(tensor.shape) != spec.shape or DTYPE_CODES[tensor.dtype] != spec.dtype:
                    raise MoeprintError(f"{spec.source.shard} is corrupt: {spec.name} read as {tuple(tensor.shape)}.")
                writer.add(spec.name, tensor)
                del tensor
                advance(spec.nbytes)
        writer.finish()  # the index: last of the weight files
        with disk_full_guard(tmp):
            _write_json(tmp / "config.json", _patched_config(config, adapter, plan, dtype))
            _copy_side_files(model_dir, tmp)
            record = {
                **plan.to_json(),
                "old_to_new": old_to_new(plan),
                "source_model": str(model_dir),
                "source_model_sha256": model_sha256(model_dir),
                "dtype": dtype,
                "n_parameters": n_params,
            }
            if replaced:  # the healed rows are inside this checkpoint now, not in a file beside the plan
                record["extra"] = {k: v for k, v in record["extra"].items() if k != "router_rows"}
                record["router_rows_replaced"] = sorted(replaced)
            _write_json(tmp / PLAN_FILE, record)
            if finalize is not None:
                finalize(tmp, result)
    return result


def model_output_specs(
    tensors: list[TensorInfo], plan: PrunePlan, adapter, config: dict[str, Any], dtype: str
) -> list[OutTensor]:
    """`output_specs` with the adapter's tensor names for this config (MoE layers only)."""
    layers = adapter.moe_layers(config)
    per_expert = adapter.per_expert_tensor_names(layers, adapter.num_experts(config))
    return output_specs(
        tensors,
        plan,
        adapter.expert_axis_tensors(layers),
        dtype,
        per_expert,
        adapter.mtp_prefixes(config),
        adapter.quantisation,
    )


def _replaced_router_tensors(
    specs: list[OutTensor], adapter, config: dict[str, Any], router_rows: Sequence[RouterRows] | None
) -> dict[str, torch.Tensor]:
    """Output router tensor name -> its healed rows (cast to the output dtype), checked against the specs."""
    if router_rows is None:
        return {}
    layers = adapter.moe_layers(config)
    if len(router_rows) != len(layers):
        raise MoeprintError(f"router rows cover {len(router_rows)} layers but the model has {len(layers)} MoE layers.")
    by_name = {s.name: s for s in specs}
    out: dict[str, torch.Tensor] = {}
    for slot, layer in enumerate(layers):
        for t in adapter.router_tensors:
            name = t.template.format(layer=layer)
            row = router_rows[slot].bias if name.endswith("bias") else router_rows[slot].weight
            if name not in by_name:
                continue
            if row is None or tuple(row.shape) != by_name[name].shape:
                raise MoeprintError(
                    f"the router rows do not fit {name} (shape {by_name[name].shape}); "
                    "were they fitted for this model and plan?"
                )
            out[name] = row.detach().to(DTYPES[by_name[name].dtype][0]).contiguous()
        if router_rows[slot].bias is not None and not any(
            n.endswith("bias") and n in out for n in (t.template.format(layer=layer) for t in adapter.router_tensors)
        ):
            raise MoeprintError(f"the router rows carry a bias but the checkpoint's layer {layer} router has none.")
    return out


def _check_layout(tensors: list[TensorInfo], adapter, config: dict[str, Any]) -> None:
    """Every MoE layer must have a router and either fused expert tensors (sliceable) or exactly the
    config's number of per-expert tensors, or the output would be inconsistent."""
    names = {t.name for t in tensors}
    n_experts = adapter.num_experts(config)
    for layer in adapter.moe_layers(config):
        routers = [t.template.format(layer=layer) for t in adapter.router_tensors]
        if not set(routers) & names:
            raise MoeprintError(f"the checkpoint has no {routers[0]}; it does not match its config (layer {layer}).")
        fused = [t.template.format(layer=layer) for t in adapter.expert_tensors]
        if {f + s for f in fused for s in ("", *adapter.quantized_expert_suffixes)} & names:
            continue
        if not adapter.per_expert_tensors:
            raise MoeprintError(f"the checkpoint has no {fused[0]}; it does not match its config (layer {layer}).")
        # the layout's spelling (some families are saved under two prefixes): the first template it uses
        template = next(
            (t for t in adapter.per_expert_tensors if t.format(layer=layer, expert=0) in names),
            adapter.per_expert_tensors[0],
        )
        present = [e for e in range(n_experts + 1) if template.format(layer=layer, expert=e) in names]
        if present != list(range(n_experts)):
            raise MoeprintError(
                f"the checkpoint has {len(present)} experts in layer {layer} (checked "
                f"{template.format(layer=layer, expert='*')}), its config says {n_experts}."
            )


def _check_free_space(out_dir: Path, n_bytes: int) -> None:
    parent = out_dir.parent if out_dir.parent.exists() else Path(".")
    free = free_bytes(parent)
    if free < n_bytes:
        raise MoeprintError(
            f"not enough disk space in {parent}: the pruned model needs {n_bytes / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free."
        )


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _copy_side_files(model_dir: Path, out_dir: Path) -> None:
    """Tokenizer, chat template, generation config, licence...: every top-level file that is not weights."""
    for path in sorted(model_dir.iterdir()):
        if path.name in DESCRIBES_BASE_NAMES or path.name.lower().endswith(DESCRIBES_BASE_SUFFIXES):
            continue
        if path.is_file() and path.name not in SKIP_NAMES and not path.name.endswith(SKIP_SUFFIXES):
            shutil.copy2(path, out_dir / path.name)
