"""Carry out a PublishPlan with huggingface_hub, idempotently and within the hub's rate limits.

Per repo: create it (kept if it exists), compare the remote tree with the plan (LFS files by
sha256, others by git blob id) and upload only what is missing or changed with `upload_folder`
(huggingface_hub's resumable, multi-commit upload when hf_xet is installed); an unchanged repo
costs no commit. Per collection: find it by title in the namespace or create it, add missing
items, then fix notes and positions. Every call is retried with backoff on HTTP 429 (honouring
Retry-After) and on transient 5xx answers.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moeprint.errors import MoeprintError
from moeprint.progress import bar
from moeprint.publish.plan import PublishCollection, PublishPlan, PublishRepo

RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_ATTEMPTS = 6
MAX_WAIT_SECONDS = 300.0
WRITE_ROLES = ("admin", "write", "contributor")


@dataclass
class PublishReport:
    uploaded: dict[str, list[str]] = field(default_factory=dict)  # repo -> files sent
    unchanged_repos: list[str] = field(default_factory=list)
    collections: dict[str, str] = field(default_factory=dict)  # title -> slug
    added_items: int = 0
    updated_items: int = 0
    retries: int = 0


class _Hub:
    """huggingface_hub calls with retry; `backoff` is the first wait in seconds (doubles each retry)."""

    def __init__(self, api, report: PublishReport, backoff: float):
        self.api, self.report, self.backoff = api, report, backoff

    def call(self, fn: Callable, *args, **kwargs):
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(MAX_ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except HfHubHTTPError as e:
                status = e.response.status_code if e.response is not None else None
                if status not in RETRY_STATUS or attempt == MAX_ATTEMPTS - 1:
                    raise
                self.report.retries += 1
                time.sleep(_wait(e.response, self.backoff * 2**attempt))
        raise AssertionError("unreachable")


def _wait(response, default: float) -> float:
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(float(value), MAX_WAIT_SECONDS) if value is not None else min(default, MAX_WAIT_SECONDS)
    except ValueError:  # an HTTP date: not worth parsing, wait the default
        return min(default, MAX_WAIT_SECONDS)


def publish(plan: PublishPlan, *, progress: bool = True, backoff: float | None = None) -> PublishReport:
    """Create repos, upload changed files and arrange collections as `plan` says."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = get_token()
    if not token:
        raise MoeprintError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access).")
    report = PublishReport()
    hub = _Hub(
        HfApi(token=token), report, float(os.environ.get("MOEPRINT_HUB_BACKOFF", "2")) if backoff is None else backoff
    )
    try:
        _check_namespace(hub, plan.namespace)
        with bar("publish", len(plan.repos) + len(plan.collections), progress) as advance:
            for repo in plan.repos:
                _publish_repo(hub, repo, plan.private)
                advance(status=repo.repo_id)
            for collection in plan.collections:
                _publish_collection(hub, collection, plan)
                advance(status=collection.title)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MoeprintError(f"the hub refused a request (HTTP {status}): {first}") from None
    return report


def _check_namespace(hub: _Hub, namespace: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        me = hub.call(hub.api.whoami)
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code == 401:
            raise MoeprintError("the Hugging Face token was refused (HTTP 401); set a valid HF_TOKEN.") from None
        raise
    role = (((me.get("auth") or {}).get("accessToken")) or {}).get("role")
    if role == "read":
        raise MoeprintError(f"the Hugging Face token of {me.get('name')} is read-only; it cannot write to {namespace}.")
    if namespace == me.get("name"):
        return
    orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or []}
    if namespace not in orgs:
        raise MoeprintError(
            f"the token of {me.get('name')} cannot write to namespace {namespace!r} "
            f"(not the user and not one of its organisations: {', '.join(sorted(orgs)) or 'none'})."
        )
    if orgs[namespace] is not None and orgs[namespace] not in WRITE_ROLES:
        raise MoeprintError(f"{me.get('name')} has role {orgs[namespace]!r} in {namespace!r}, which cannot write.")


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the hub reports for files not stored in LFS/xet)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _changed_files(hub: _Hub, repo: PublishRepo) -> list[str]:
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        remote = {
            e.path: e
            for e in hub.call(lambda: list(hub.api.list_repo_tree(repo.repo_id, recursive=True)))
            if isinstance(e, RepoFile)
        }
    except (EntryNotFoundError, RevisionNotFoundError):  # a new, empty repo has no tree yet
        remote = {}
    changed = []
    for f in repo.files:
        entry = remote.get(f.path)
        if entry is None or entry.size != f.size:
            changed.append(f.path)
        elif entry.lfs is not None:
            if entry.lfs.sha256 != f.sha256:
                changed.append(f.path)
        elif entry.blob_id != git_blob_sha1(Path(repo.folder) / f.path):
            changed.append(f.path)
    return changed


def _publish_repo(hub: _Hub, repo: PublishRepo, private: bool) -> None:
    hub.call(hub.api.create_repo, repo.repo_id, private=private, exist_ok=True)  # an existing repo is kept
    changed = _changed_files(hub, repo)
    if not changed:
        hub.report.unchanged_repos.append(repo.repo_id)
        return
    hub.call(
        hub.api.upload_folder,
        repo_id=repo.repo_id,
        folder_path=repo.folder,
        allow_patterns=changed,
        commit_message=f"moeprint publish: {len(changed)} file(s)",
    )
    hub.report.uploaded[repo.repo_id] = changed


def _find_collection(hub: _Hub, namespace: str, title: str):
    for c in hub.call(lambda: list(hub.api.list_collections(owner=namespace))):
        if c.title == title:
            return hub.call(hub.api.get_collection, c.slug)  # the listing may truncate items
    return None


def _publish_collection(hub: _Hub, collection: PublishCollection, plan: PublishPlan) -> None:
    found = _find_collection(hub, plan.namespace, collection.title)
    if found is None:
        found = hub.call(
            hub.api.create_collection,
            title=collection.title,
            namespace=plan.namespace,
            description=collection.description,
            private=plan.private,
            exists_ok=True,
        )
    slug = found.slug
    hub.report.collections[collection.title] = slug
    present = {i.item_id for i in found.items if i.item_type == "model"}
    for item in collection.items:
        if item.repo_id not in present:
            hub.call(hub.api.add_collection_item, slug, item.repo_id, "model", note=item.note, exists_ok=True)
            hub.report.added_items += 1
    items = sorted(hub.call(hub.api.get_collection, slug).items, key=lambda i: i.position)
    by_id = {i.item_id: i for i in items if i.item_type == "model"}
    order = [i.item_id for i in items]  # moving an item shifts the ones after it: track the order here
    for item in collection.items:
        have = by_id[item.repo_id]
        if order.index(item.repo_id) != item.position or (have.note or "") != item.note:
            hub.call(hub.api.update_collection_item, slug, have.item_object_id, note=item.note, position=item.position)
            order.remove(item.repo_id)
            order.insert(item.position, item.repo_id)
            hub.report.updated_items += 1
