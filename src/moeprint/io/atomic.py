"""Atomic file and directory writes, and JSON that may be gzipped.

Every artifact moeprint writes appears all at once or not at all: a temp file in the
same directory, fsync'd, then renamed over the target. Directories are written under a
temp name and renamed once complete, so a killed run never leaves output that looks finished.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.outputs import OutputLock, check_replaceable


def make_output_dir(directory: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """mkdir -p, or one clear error when the place cannot hold output (a file in the way, read-only, ...)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MoeprintError(
            f"cannot write {target or directory}: {directory} cannot be created as a folder "
            f"({e.strerror or e.__class__.__name__})."
        ) from None
    return directory


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    if path.is_dir():
        raise MoeprintError(f"cannot write {path}: it is a folder; give a file path.")
    make_output_dir(path.parent, path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise MoeprintError(f"cannot write {path} ({e.strerror or e.__class__.__name__}).") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it into place (for writers that want a filename)."""
    path = Path(path)
    if path.is_dir():
        raise MoeprintError(f"cannot write {path}: it is a folder; give a file path.")
    make_output_dir(path.parent, path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class atomic_directory:
    """Build a directory under a unique temp name and rename it to `path` only when the block succeeds.

    Creating it checks the target (`outputs.check_replaceable`: an existing folder is replaced only with
    `overwrite` and only if it holds a `kind` artifact) and takes the output's lock, so a caller that
    creates it before its expensive work (`target = atomic_directory(...)`, later `with target as tmp`)
    fails early. An old folder is renamed aside before the new one is renamed in, then removed: a kill
    in between leaves the old one aside, and the next writer puts it back.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, kind: str | None = None):
        self.path = Path(path)
        check_replaceable(self.path, kind, overwrite)
        make_output_dir(self.path.parent, self.path)
        self.lock = OutputLock(self.path).acquire()
        try:
            self._recover()
            check_replaceable(self.path, kind, overwrite)  # again: another writer may have finished meanwhile
        except BaseException:
            self.lock.release()
            raise
        self.tmp: Path | None = None

    def _leftovers(self, suffix: str) -> list[Path]:
        pattern = re.compile(rf"\.{re.escape(self.path.name)}\.([a-z0-9_]{{8}}\.)?{suffix}")
        return sorted(p for p in self.path.parent.iterdir() if pattern.fullmatch(p.name))

    def _recover(self) -> None:
        """Under the lock every temp folder of this output is a dead writer's: remove it; put back an old
        folder that a killed writer had renamed aside, when nothing replaced it."""
        for stale in self._leftovers("partial"):
            shutil.rmtree(stale, ignore_errors=True)
        for old in self._leftovers("old"):
            if not self.path.exists():
                os.replace(old, self.path)
            else:
                shutil.rmtree(old, ignore_errors=True)

    def __enter__(self) -> Path:
        try:
            self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial"))
        except OSError as e:
            self.lock.release()
            raise MoeprintError(f"cannot write {self.path} ({e.strerror or e.__class__.__name__}).") from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                return False
            aside = None
            if self.path.exists():
                aside = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.old")
                os.replace(self.path, aside)
            os.replace(self.tmp, self.path)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
            return False
        finally:
            self.lock.release()


def read_json(path: str | os.PathLike) -> Any:
    """Read `X.json` or `X.json.gz` (whichever exists); a clear error for missing or malformed files."""
    path = Path(path)
    candidates = [path] if path.exists() else [Path(str(path) + ".gz")]
    if str(path).endswith(".json.gz") and not path.exists():
        candidates.append(Path(str(path)[: -len(".gz")]))
    for p in candidates:
        if p.exists():
            try:
                if p.suffix == ".gz":
                    with gzip.open(p, "rt", encoding="utf-8") as f:
                        return json.load(f)
                with open(p, encoding="utf-8") as f:
                    return json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
                raise MoeprintError(f"{p} is not valid JSON ({e.__class__.__name__}: {e}).") from None
    raise MoeprintError(f"{path} does not exist.")


def json_exists(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.exists() or Path(str(path) + ".gz").exists()


def read_parquet(path: str | os.PathLike, **kwargs: Any):
    """pyarrow.parquet.read_table, with one clear error for a missing, truncated or foreign file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, **kwargs)
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise MoeprintError(f"{path} is not a readable Parquet table ({(str(e).splitlines() or [''])[0]}).") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file, streamed; one clear error
    naming the line for text that is not UTF-8, not JSON, or not a JSON object."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError:
                raise MoeprintError(f"{path} line {lineno + 1} is not UTF-8 text.") from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MoeprintError(f"{path} line {lineno} is not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise MoeprintError(f"{path} line {lineno} is not a JSON object.")
            yield lineno, row
