"""Where a command may write: the checks every output passes before any work (docs/formats.md, "Outputs").

- An output never equals, contains or lies inside an input. A run directory is an input as a whole for
  "equal" and "contains", and through its data (RUN_DATA) for "inside": RUN/site, RUN/evals/... stay writable.
- An existing output folder is replaced only when it holds an artifact of the kind being written
  (`artifact_kind`), so `--overwrite` (or a site rebuild) never deletes a run, a model or anything foreign.
- One writer per output: a lock file beside it, held with flock for the writer's lifetime (the kernel
  drops it when a killed writer dies, so no stale lock survives a SIGKILL).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from moeprint.errors import MoeprintError

# what stages read from a run directory; outputs may go anywhere else inside it
RUN_DATA = ("manifest.json", "prompts.parquet", "traces", "fingerprints", "published", "plans", ".record")
# longest output name: leaves room for the hidden temp and lock names built from it within NAME_MAX (255)
MAX_NAME_BYTES = 200


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path))).resolve()


def _is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() and any(
        (path / name).exists() for name in ("traces", "prompts.parquet", "fingerprints")
    )


def _input_areas(path: str | os.PathLike) -> list[tuple[Path, bool]]:
    """(area, whole): whole=False marks a run root, which outputs may lie inside (beside its data)."""
    p = _absolute(path)
    if p.is_dir() and _is_run_dir(p):
        return [(p, False)] + [(p / name, True) for name in RUN_DATA]
    return [(p, True)]


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "--out") -> Path:
    """One clear error when `out` cannot be an output: it equals, contains or lies inside an input, it is a
    symbolic link, its name is too long, or a file stands where a parent folder must go."""
    raw = Path(out)
    for part in raw.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise MoeprintError(
                f"{option}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; "
                f"give names of at most {MAX_NAME_BYTES} bytes."
            )
    if raw.is_symlink():
        raise MoeprintError(f"{option} {out} is a symbolic link; give the real path.")
    target = _absolute(out)
    for inp in inputs:
        for area, whole in _input_areas(inp):
            if target == area:
                raise MoeprintError(f"{option} {out} is an input of this command ({area}); choose another output.")
            if area.is_relative_to(target):
                raise MoeprintError(f"{option} {out} contains the input {inp}; choose another output.")
            if whole and target.is_relative_to(area):
                raise MoeprintError(f"{option} {out} lies inside the input {area}; choose another output.")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MoeprintError(f"cannot write {option} {out}: {parent} is a file, not a writable directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MoeprintError(f"cannot write {option} {out}: {parent} is not a writable directory.")
    return target


def artifact_kind(path: Path) -> str | None:
    """The kind of moeprint artifact a folder holds: its manifest's `kind` (site, sweep, imported, recorded,
    fingerprints, moeprint-testbed-*), `checkpoint` for a pruned model (moeprint_plan.json), else None."""
    for name in ("manifest.json", "training_manifest.json"):
        try:
            doc = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
            return doc["kind"]
        if isinstance(doc, dict) and {"rankings", "segments_pooled"} <= set(doc):
            return "fingerprints"  # written before fingerprints manifests carried a kind
    if (path / "moeprint_plan.json").is_file():
        return "checkpoint"
    return None


def check_replaceable(path: Path, kind: str | None, overwrite: bool) -> None:
    """An existing `path` may be replaced only with `overwrite` and only if it holds a `kind` artifact."""
    if path.is_symlink():
        raise MoeprintError(f"{path} is a symbolic link; give the real path.")
    if not path.exists():
        return
    if not path.is_dir():
        raise MoeprintError(f"{path} is a file; give a folder path.")
    if not any(path.iterdir()):
        return  # an empty folder holds nothing to lose
    if not overwrite:
        raise MoeprintError(
            f"{path} already exists; remove it or choose another output path"
            + (" (or pass --overwrite)." if kind else ".")
        )
    found = artifact_kind(path)
    if kind is None or found != kind:
        what = f"it holds a moeprint {found}" if found else "moeprint did not write it"
        raise MoeprintError(
            f"{path} exists and is not a moeprint {kind or 'output'} ({what}); only what this command "
            "wrote before can be replaced. Choose another output path."
        )


class OutputLock:
    """flock on `.NAME.lock` beside `path`; a second writer fails at once with an error saying why."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MoeprintError(
                f"cannot write {self.path}: {self.lock_path.parent} cannot be created as a folder "
                f"({e.strerror or e.__class__.__name__})."
            ) from None
        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise MoeprintError(
                    f"another moeprint process is writing {self.path} (it holds {self.lock_path}); "
                    "wait for it to finish or choose another output path."
                ) from None
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its previous holder unlinked while we waited for it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()  # a writer that failed before releasing: its lock ends with it

    def __enter__(self) -> OutputLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
