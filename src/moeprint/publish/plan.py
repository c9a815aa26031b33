"""What `moeprint publish` would do, decided from local files only: repos, files, collections.

One repo per checkpoint folder (its name is the folder's), every file with its size and sha256,
and, with collections, the reference project's layout: one main collection of every checkpoint
plus one per domain, items ordered by size, each note naming the expert count and criterion.
The plan is built and checked completely before any network call.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moeprint.adapters import load_config_dict
from moeprint.errors import MoeprintError
from moeprint.evaluate.inputs import file_sha256
from moeprint.io.atomic import json_exists
from moeprint.io.shards import INDEX_NAME, list_tensors
from moeprint.prune.factory import read_factory_names
from moeprint.prune.naming import family_name, format_size
from moeprint.prune.surgery import PLAN_FILE, CheckpointRecord, read_checkpoint_record

# The hub's rules for a repo or namespace name (letters, digits, - _ .; no "--" or ".."; at most 96 chars).
HUB_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
# Conservative limits for collection text (the hub's are not documented; these always fit).
MAX_TITLE, MAX_DESCRIPTION, MAX_NOTE = 60, 150, 500
SCHEMA = "moeprint.publish/1"


@dataclass(frozen=True)
class PublishFile:
    path: str  # relative to the checkpoint folder, POSIX separators
    size: int
    sha256: str


@dataclass(frozen=True)
class PublishRepo:
    repo_id: str
    folder: str
    domain: str
    criterion: str
    n_experts: int
    base_num_experts: int | None
    n_parameters: int
    files: tuple[PublishFile, ...]
    warnings: tuple[str, ...] = ()  # what a reader of the published repo would see that they should not

    @property
    def size_label(self) -> str:
        return format_size(self.n_parameters).upper()


@dataclass(frozen=True)
class PublishItem:
    repo_id: str
    position: int
    note: str


@dataclass(frozen=True)
class PublishCollection:
    title: str
    description: str
    domain: str | None  # None: the main collection
    items: tuple[PublishItem, ...]


@dataclass(frozen=True)
class PublishPlan:
    namespace: str
    private: bool
    repos: tuple[PublishRepo, ...]
    collections: tuple[PublishCollection, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "namespace": self.namespace,
            "private": self.private,
            "repos": [asdict(r) for r in self.repos],
            "collections": [asdict(c) for c in self.collections],
        }


def check_hub_name(name: str, what: str) -> str:
    if not HUB_NAME.match(name) or name.endswith(".git"):
        raise MoeprintError(
            f"{what} {name!r} is not a valid hub name (letters, digits, '-', '_', '.'; "
            "no '--' or '..'; at most 96 characters)."
        )
    return name


def plan_publish(
    checkpoints_dir: str | Path, namespace: str, *, private: bool = False, collections: bool = False
) -> PublishPlan:
    """The full plan for a factory output (or any folder of checkpoint folders)."""
    root = Path(checkpoints_dir)
    check_hub_name(namespace, "namespace")
    if not root.is_dir():
        raise MoeprintError(f"checkpoints folder {root} does not exist.")
    folders = _checkpoint_folders(root)
    repos = tuple(_repo(namespace, folder) for folder in folders)
    return PublishPlan(namespace, private, repos, _collections(repos) if collections else ())


def _checkpoint_folders(root: Path) -> list[Path]:
    """The factory's summary.json names them; otherwise every visible subfolder (a partial factory
    folder is hidden: `.name.partial`)."""
    listed = read_factory_names(root)
    if listed is not None:
        names = [check_hub_name(name, "checkpoint name") for name in listed]
        missing = [n for n in names if not (root / n).is_dir()]
        if missing:
            raise MoeprintError(
                f"{root} is incomplete: summary.json lists {len(missing)} checkpoint(s) that are "
                f"missing, e.g. {missing[0]}."
            )
        return [root / n for n in names]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise MoeprintError(f"{root} holds no checkpoint folders.")
    return folders


def _repo(namespace: str, folder: Path) -> PublishRepo:
    name = check_hub_name(folder.name, "checkpoint folder name")
    if not json_exists(folder / PLAN_FILE):
        raise MoeprintError(f"checkpoint {folder} is incomplete: no {PLAN_FILE} (written last by `moeprint prune`).")
    for needed in ("config.json", "README.md"):
        if not (folder / needed).is_file():
            raise MoeprintError(f"checkpoint {folder} is incomplete: no {needed}.")
    if not (folder / INDEX_NAME).is_file() and not (folder / "model.safetensors").is_file():
        raise MoeprintError(f"checkpoint {folder} is incomplete: no {INDEX_NAME} or model.safetensors.")
    list_tensors(folder)  # every shard the index names is present and readable
    record = read_checkpoint_record(folder)
    if record is None or record.missing("domain", "criterion", "n_experts", "n_parameters"):
        raise MoeprintError(f"{folder / PLAN_FILE} is not a moeprint plan record.")
    load_config_dict(folder)  # a clear error for a broken config
    files = tuple(_file(folder, p) for p in sorted(folder.rglob("*")) if p.is_file() and not _hidden(folder, p))
    return PublishRepo(
        repo_id=f"{namespace}/{name}",
        folder=str(folder),
        domain=record.domain,
        criterion=record.criterion,
        n_experts=int(record.n_experts),
        base_num_experts=record.extra.get("base_num_experts"),
        n_parameters=int(record.n_parameters),
        files=files,
        warnings=_local_paths(record),
    )


def _local_paths(record: CheckpointRecord) -> tuple[str, ...]:
    """The plan record names the folders it was made from; absolute ones are this machine's paths."""
    named = {
        "base_model": record.doc.get("base_model"),
        "source_model": record.doc.get("source_model"),
        "extra.ranking_source": record.extra.get("ranking_source"),
    }
    return tuple(
        f"{PLAN_FILE} `{key}` is a local path ({value})"
        for key, value in named.items()
        if isinstance(value, str) and Path(value).is_absolute()
    )


def _hidden(folder: Path, path: Path) -> bool:
    """Dot files and folders (caches, partial downloads) are never published."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _file(folder: Path, path: Path) -> PublishFile:
    return PublishFile(path.relative_to(folder).as_posix(), path.stat().st_size, file_sha256(path))


def _family(repos: tuple[PublishRepo, ...]) -> str:
    families = {family_name(load_config_dict(r.folder).get("model_type", "moe")) for r in repos}
    return families.pop().upper() if len(families) == 1 else "MoE"


def _note(repo: PublishRepo) -> str:
    of = f" of {repo.base_num_experts}" if repo.base_num_experts else ""
    return (
        f"{repo.n_experts}{of} experts per layer, {repo.criterion} criterion, {repo.size_label} parameters, "
        f"{repo.domain}"
    )[:MAX_NOTE]


def _items(repos: list[PublishRepo]) -> tuple[PublishItem, ...]:
    ordered = sorted(repos, key=lambda r: (r.n_parameters, r.n_experts, r.repo_id))
    return tuple(PublishItem(r.repo_id, i, _note(r)) for i, r in enumerate(ordered))


def _span(repos: list[PublishRepo]) -> str:
    lo, hi = min(repos, key=lambda r: r.n_parameters), max(repos, key=lambda r: r.n_parameters)
    return lo.size_label if lo is hi or lo.size_label == hi.size_label else f"{lo.size_label} to {hi.size_label}"


def _collections(repos: tuple[PublishRepo, ...]) -> tuple[PublishCollection, ...]:
    """A main collection of everything, then one per domain (alphabetical)."""
    family = _family(repos)
    domains = sorted({r.domain for r in repos})
    main = PublishCollection(
        title=f"{family} pruned experts {_span(list(repos))}"[:MAX_TITLE],
        description=f"All {len(repos)} expert-pruned checkpoints: {', '.join(domains)}"[:MAX_DESCRIPTION],
        domain=None,
        items=_items(list(repos)),
    )
    out = [main]
    for domain in domains:
        mine = [r for r in repos if r.domain == domain]
        criteria = ", ".join(sorted({r.criterion for r in mine}))
        experts = sorted({r.n_experts for r in mine})
        label = domain.replace("_", " ").title()
        out.append(
            PublishCollection(
                title=f"{family} {label} {_span(mine)}"[:MAX_TITLE],
                description=(
                    f"{len(mine)} {domain} checkpoints, {experts[0]} to {experts[-1]} experts per layer ({criteria})"
                )[:MAX_DESCRIPTION],
                domain=domain,
                items=_items(mine),
            )
        )
    titles = [c.title for c in out]
    if len(set(titles)) != len(titles):
        raise MoeprintError("two collections would get the same title; rename the domains.")
    return tuple(out)
