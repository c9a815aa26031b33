"""Safetensors checkpoints as data: which shard holds which tensor, with what dtype and shape.

Headers are read and checked before any weight is: a missing index, a shard the index names but
that is absent, a header that is not JSON, or a file shorter than its header promises (a truncated
download) are each one clear error. Weights are then read one tensor at a time with
`safetensors.safe_open`, and written by `ShardWriter`, which holds at most one output shard.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from moeprint.errors import MoeprintError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# safetensors dtype code -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
DTYPE_CODES = {torch_dtype: code for code, (torch_dtype, _) in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors code, e.g. "BF16", "U8"
    shape: tuple[int, ...]
    shard: str  # file name inside the model folder
    offset: int  # start of the data within the shard's data section (for in-order reading)

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a safetensors tensor of `dtype` (a safetensors dtype name) and `shape`."""
    return DTYPES[dtype][1] * math.prod(shape)


def read_header(path: Path) -> dict[str, dict]:
    """The JSON header of one safetensors file, checked against the file's real size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise MoeprintError(f"{path} is truncated or not a safetensors file (shorter than 8 bytes).")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > min(size - 8, 100_000_000):
                raise MoeprintError(f"{path} is corrupt or not a safetensors file (header length {header_len}).")
            header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MoeprintError(f"{path} is corrupt: its safetensors header is not valid JSON.") from None
    except FileNotFoundError:
        raise MoeprintError(f"{path} does not exist.") from None
    if not isinstance(header, dict):
        raise MoeprintError(f"{path} is corrupt: its safetensors header is not a JSON object.")
    header.pop("__metadata__", None)
    data_end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + header_len + data_end > size:
        raise MoeprintError(
            f"{path} is truncated: its header promises {8 + header_len + data_end} bytes but the file has {size}."
        )
    for name, v in header.items():
        if v.get("dtype") not in DTYPES:
            raise MoeprintError(f"{path}: tensor {name} has unsupported dtype {v.get('dtype')}.")
    return header


def list_tensors(model_dir: str | Path) -> list[TensorInfo]:
    """Every tensor of a local checkpoint, in reading order (shard by shard, by offset within a shard)."""
    model_dir = Path(model_dir)
    index_path = model_dir / INDEX_NAME
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise MoeprintError(f"{index_path} is corrupt (no valid `weight_map`).") from None
        shards = sorted(set(weight_map.values()))
    elif (model_dir / SINGLE_NAME).exists():
        weight_map, shards = None, [SINGLE_NAME]
    else:
        sharded = sorted(p.name for p in model_dir.glob("*.safetensors"))
        if sharded:
            raise MoeprintError(f"{model_dir} has safetensors shards but no {INDEX_NAME}; the index is missing.")
        raise MoeprintError(f"{model_dir} has no safetensors weights (only safetensors are read, never pickle).")
    tensors: list[TensorInfo] = []
    for shard in shards:
        path = model_dir / shard
        if not path.exists():
            raise MoeprintError(f"{INDEX_NAME} names shard {shard}, which is missing from {model_dir}.")
        header = read_header(path)
        for name, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if weight_map is not None and weight_map.get(name) != shard:
                raise MoeprintError(f"{path} holds {name}, but {INDEX_NAME} says it lives in {weight_map.get(name)}.")
            tensors.append(TensorInfo(name, v["dtype"], tuple(v["shape"]), shard, int(v["data_offsets"][0])))
    if weight_map is not None:
        missing = set(weight_map) - {t.name for t in tensors}
        if missing:
            raise MoeprintError(
                f"{INDEX_NAME} lists {len(missing)} tensors absent from their shards, e.g. {min(missing)}."
            )
    return tensors


class ShardReader:
    """Reads tensors (or only some rows of axis 0) lazily with `safe_open`, one tensor at a time.

    A shard's handle is kept open between tensors but reopened once `release_bytes` have been read
    through it: the mapped pages of a multi-GB shard are then released, so resident memory stays near
    the size of the tensors in flight instead of growing to the size of the shard.
    """

    def __init__(self, model_dir: Path, release_bytes: int = 256 * 2**20):
        self.model_dir = Path(model_dir)
        self.release_bytes = release_bytes
        self.handle, self.handle_shard, self.read_since_open = None, None, 0

    def _open(self, shard: str):
        if self.handle is None or self.handle_shard != shard or self.read_since_open > self.release_bytes:
            self.close()
            self.handle = safe_open(self.model_dir / shard, framework="pt").__enter__()
            self.handle_shard, self.read_since_open = shard, 0
        return self.handle

    def read(self, info: TensorInfo, rows: list[int] | None = None) -> torch.Tensor:
        try:
            f = self._open(info.shard)
            if rows is None:
                tensor = f.get_tensor(info.name)
            else:
                view = f.get_slice(info.name)
                parts = [view[start:stop] for start, stop in _runs(rows)]
                tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        except MoeprintError:
            raise
        except Exception as e:  # safetensors raises its own error types for damaged files
            self.close()
            raise MoeprintError(
                f"cannot read {info.name} from {self.model_dir / info.shard} ({e}); the shard is corrupt."
            ) from None
        self.read_since_open += tensor.numel() * tensor.element_size()
        return tensor

    def close(self) -> None:
        if self.handle is not None:
            self.handle.__exit__(None, None, None)
        self.handle, self.handle_shard = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read_tensor(model_dir: Path, info: TensorInfo, rows: list[int] | None = None) -> torch.Tensor:
    """One tensor (or some rows of its axis 0), opening the shard just for it."""
    with ShardReader(model_dir) as reader:
        return reader.read(info, rows)


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """[0, 1, 2, 5, 6] -> [(0, 3), (5, 7)]: contiguous ranges, so each is one read."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class ShardWriter:
    """Writes tensors into pre-planned shards, flushing each shard as soon as its last tensor arrives.

    `plan` maps tensor name -> shard index (planned from header shapes, so the `-of-N` names and the
    index are known up front). Holds at most one shard in memory. The index is written by `finish`.
    """

    def __init__(self, out_dir: Path, plan: dict[str, int], n_shards: int):
        self.out_dir = out_dir
        self.n_shards = n_shards
        self.remaining = [0] * n_shards
        for shard in plan.values():
            self.remaining[shard] += 1
        self.plan = plan
        self.pending: dict[int, dict[str, torch.Tensor]] = {}
        self.weight_map: dict[str, str] = {}
        self.total_size = 0

    def shard_name(self, i: int) -> str:
        return f"model-{i + 1:05d}-of-{self.n_shards:05d}.safetensors"

    def add(self, name: str, tensor: torch.Tensor) -> None:
        shard = self.plan[name]
        self.pending.setdefault(shard, {})[name] = tensor.contiguous()
        self.remaining[shard] -= 1
        if self.remaining[shard] == 0:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        tensors = self.pending.pop(shard)
        name = self.shard_name(shard)
        with disk_full_guard(self.out_dir):
            save_file(tensors, self.out_dir / name, metadata={"format": "pt"})
        os.chmod(self.out_dir / name, 0o644)  # safetensors creates files private to the owner
        for key, t in tensors.items():
            self.weight_map[key] = name
            self.total_size += t.numel() * t.element_size()

    def finish(self, metadata: dict | None = None) -> None:
        if self.pending or any(self.remaining):
            raise RuntimeError("ShardWriter.finish called before every planned tensor was written")
        # Always an index, even for one shard: its presence marks the weights as complete.
        index = {
            "metadata": {"total_size": self.total_size, **(metadata or {})},
            "weight_map": dict(sorted(self.weight_map.items())),
        }
        with disk_full_guard(self.out_dir):
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def plan_shards(sizes: list[tuple[str, int]], shard_size: int) -> tuple[dict[str, int], int]:
    """Greedy in-order packing: a new shard starts when the next tensor would overflow the current one."""
    plan: dict[str, int] = {}
    shard, used = 0, 0
    for name, nbytes in sizes:
        if used and used + nbytes > shard_size:
            shard, used = shard + 1, 0
        plan[name] = shard
        used += nbytes
    return plan, shard + 1


class disk_full_guard:
    """Turn ENOSPC (and EDQUOT) into one clear MoeprintError."""

    def __init__(self, where: Path):
        self.where = where

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MoeprintError(f"the disk is full while writing {self.where}; free space and rerun.") from None
        if exc_type is not None and issubclass(exc_type, Exception) and "No space left" in str(exc):
            raise MoeprintError(f"the disk is full while writing {self.where}; free space and rerun.") from None
        return False


def parse_size(text: str) -> int:
    """'5GB' -> 5e9, '500MB', '2GiB', '1000' (bytes)."""
    units = {
        "": 1,
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }
    s = text.strip().upper().replace(" ", "")
    number = s.rstrip("KMGTIB")
    unit = s[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise MoeprintError(f"cannot read shard size {text!r}; use e.g. 5GB, 500MB or 2GiB.")
    return int(value * units[unit])


def free_bytes(path: Path) -> int:
    return os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
