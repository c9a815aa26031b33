"""A stand-in for the Hugging Face Hub HTTP API on 127.0.0.1: only the endpoints `moeprint publish` uses.

It is not the hub. It answers, in the shapes huggingface_hub 2.4 parses: whoami-v2, repos/create,
the repo tree, preupload, validate-yaml (parsing the card's YAML with huggingface_hub), the LFS
batch API and PUT uploads, ndjson commits, and collections (list, get, create, add item, patch
item with move semantics). State is kept in memory so tests can inspect repos, files, commits and
collections; `fail` injects answers such as one HTTP 429 with Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

WRITE_TOKEN, READ_TOKEN = "hf_write_token", "hf_read_token"
USER = "alice"
ORGS = {"moe-org": "write", "viewers": "read"}


def blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    files: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)  # path -> (content, lfs sha256)
    commits: list[list[str]] = field(default_factory=list)  # paths of each commit


@dataclass
class State:
    repos: dict[str, Repo] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    collections: dict[str, dict] = field(default_factory=dict)  # slug -> collection JSON
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path regex, status): answered once
    next_id: int = 0

    def new_id(self) -> str:
        self.next_id += 1
        return f"{self.next_id:024x}"


class StandinHub:
    def __init__(self):
        self.state = State()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: StandinHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # ---- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body=None, headers: dict | None = None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _user(self):
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        return {WRITE_TOKEN: "write", READ_TOKEN: "read"}.get(token)

    def _can_write(self, namespace: str) -> bool:
        return self._user() == "write" and (namespace == USER or ORGS.get(namespace) == "write")

    def _dispatch(self, method: str):
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        body = self._body()
        state = self.hub.state
        with self.hub.lock:
            state.requests.append((method, path))
            for i, (m, pattern, status) in enumerate(state.fail):
                if m == method and re.search(pattern, path):
                    del state.fail[i]
                    return self._send(status, {"error": "rate limited"}, {"Retry-After": "0"})
            if path.startswith("/lfs-upload/") and method == "PUT":
                oid = path.rsplit("/", 1)[1]
                if hashlib.sha256(body).hexdigest() != oid:
                    return self._send(400, {"error": "sha256 mismatch"})
                state.lfs[oid] = body
                return self._send(200, {})
            if self._user() is None:
                return self._send(401, {"error": "Invalid credentials"})
            for pattern, name in _ROUTES:
                m = re.fullmatch(pattern, path)
                if m and name.startswith(method + " "):
                    return getattr(self, "h_" + name.split(" ", 1)[1])(body, query, **m.groupdict())
            return self._send(404, {"error": f"no stand-in route for {method} {path}"})

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    # ---- endpoints ------------------------------------------------------------------------
    def h_whoami(self, body, query):
        role = self._user()
        return self._send(
            200,
            {
                "type": "user",
                "name": USER,
                "orgs": [{"name": n, "roleInOrg": r} for n, r in ORGS.items()],
                "auth": {"type": "access_token", "accessToken": {"displayName": "t", "role": role}},
            },
        )

    def h_create_repo(self, body, query):
        doc = json.loads(body)
        namespace = doc.get("organization") or USER
        repo_id = f"{namespace}/{doc['name']}"
        if not self._can_write(namespace):
            return self._send(403, {"error": f"You don't have the rights to create a model under {namespace}"})
        if repo_id in self.hub.state.repos:
            return self._send(409, {"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"})
        self.hub.state.repos[repo_id] = Repo(private=doc.get("visibility") == "private" or bool(doc.get("private")))
        return self._send(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _repo(self, repo_id):
        return self.hub.state.repos.get(repo_id)

    def _missing(self, repo_id):
        return self._send(404, {"error": f"Repository {repo_id} not found"}, {"X-Error-Code": "RepoNotFound"})

    def h_tree(self, body, query, repo_id):
        repo = self._repo(repo_id)
        if repo is None:
            return self._missing(repo_id)
        out = []
        for path, (content, lfs) in sorted(repo.files.items()):
            entry = {"type": "file", "path": path, "size": len(content), "oid": blob_sha1(content)}
            if lfs:
                entry["lfs"] = {"oid": lfs, "size": len(content), "pointerSize": 134}
            out.append(entry)
        return self._send(200, out)

    def h_preupload(self, body, query, repo_id):
        repo = self._repo(repo_id)
        if repo is None:
            return self._missing(repo_id)
        files = []
        for f in json.loads(body)["files"]:
            remote = repo.files.get(f["path"])
            lfs = f["path"].endswith(".safetensors") or f["size"] > 1_000_000
            oid = None if remote is None else (remote[1] or blob_sha1(remote[0]))
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return self._send(200, {"files": files})

    def h_validate_yaml(self, body, query):
        from huggingface_hub import ModelCard

        try:
            ModelCard(json.loads(body)["content"]).data.to_dict()
        except Exception as e:  # noqa: BLE001 - the stand-in reports any parse failure as the hub would
            return self._send(400, {"errors": [{"message": str(e)}]})
        return self._send(200, {"errors": [], "warnings": []})

    def h_lfs_batch(self, body, query, repo_id):
        if self._repo(repo_id) is None:
            return self._missing(repo_id)
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.state.lfs:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return self._send(200, {"transfer": "basic", "objects": objects})

    def h_commit(self, body, query, repo_id):
        repo = self._repo(repo_id)
        if repo is None:
            return self._missing(repo_id)
        if not self._can_write(repo_id.split("/")[0]):
            return self._send(403, {"error": "forbidden"})
        paths = []
        for line in body.decode().splitlines():
            op = json.loads(line)
            value = op["value"]
            if op["key"] == "file":
                repo.files[value["path"]] = (base64.b64decode(value["content"]), None)
            elif op["key"] == "lfsFile":
                if value["oid"] not in self.hub.state.lfs:
                    return self._send(400, {"error": f"LFS object {value['oid']} was never uploaded"})
                repo.files[value["path"]] = (self.hub.state.lfs[value["oid"]], value["oid"])
            else:
                continue
            paths.append(value["path"])
        repo.commits.append(paths)
        oid = hashlib.sha1(repr((repo_id, len(repo.commits))).encode()).hexdigest()
        return self._send(
            200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        )

    # ---- collections ----------------------------------------------------------------------
    def h_list_collections(self, body, query):
        owner = (query.get("owner") or [None])[0]
        found = [c for c in self.hub.state.collections.values() if owner is None or c["owner"]["name"] == owner]
        # listings truncate items and carry no position (huggingface_hub numbers them)
        return self._send(
            200, [{**{k: v for k, v in c.items() if k != "position"}, "items": c["items"][:4]} for c in found]
        )

    def h_get_collection(self, body, query, slug):
        c = self.hub.state.collections.get(slug)
        return self._send(200, c) if c else self._send(404, {"error": "Collection not found"})

    def h_create_collection(self, body, query):
        doc = json.loads(body)
        if not self._can_write(doc["namespace"]):
            return self._send(403, {"error": "forbidden"})
        for c in self.hub.state.collections.values():
            if c["owner"]["name"] == doc["namespace"] and c["title"] == doc["title"]:
                return self._send(409, {"error": "Collection already exists", "slug": c["slug"]})
        slug = f"{doc['namespace']}/{re.sub(r'[^a-z0-9]+', '-', doc['title'].lower()).strip('-')}-{self.hub.state.new_id()}"
        c = {
            "slug": slug,
            "title": doc["title"],
            "owner": {"name": doc["namespace"]},
            "items": [],
            "lastUpdated": "2026-12-02T00:00:00.000Z",
            "position": len(self.hub.state.collections),
            "private": bool(doc.get("private")),
            "theme": "blue",
            "upvotes": 0,
            "description": doc.get("description"),
        }
        self.hub.state.collections[slug] = c
        return self._send(200, c)

    def h_add_item(self, body, query, slug):
        c = self.hub.state.collections.get(slug)
        if c is None:
            return self._send(404, {"error": "Collection not found"})
        doc = json.loads(body)
        if any(i["id"] == doc["item"]["id"] for i in c["items"]):
            return self._send(409, {"error": "Item already in collection"})
        if doc["item"]["type"] == "model" and doc["item"]["id"] not in self.hub.state.repos:
            return self._send(404, {"error": "Repository not found"})
        c["items"].append(
            {
                "_id": self.hub.state.new_id(),
                "id": doc["item"]["id"],
                "type": doc["item"]["type"],
                "position": len(c["items"]),
                **({"note": {"text": doc["note"]}} if "note" in doc else {}),
            }
        )
        return self._send(200, c)

    def h_patch_item(self, body, query, slug, item):
        c = self.hub.state.collections.get(slug)
        target = next((i for i in (c or {}).get("items", []) if i["_id"] == item), None)
        if target is None:
            return self._send(404, {"error": "Item not found"})
        doc = json.loads(body)
        if "note" in doc:
            target["note"] = {"text": doc["note"]}
        if "position" in doc:  # move: the others shift
            c["items"].remove(target)
            c["items"].insert(doc["position"], target)
            for position, i in enumerate(c["items"]):
                i["position"] = position
        return self._send(200, {"success": True})


REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_ROUTES = [
    (r"/api/whoami-v2", "GET whoami"),
    (r"/api/repos/create", "POST create_repo"),
    (rf"/api/models/{REPO}/tree/main(?:/.*)?", "GET tree"),
    (rf"/api/models/{REPO}/preupload/main", "POST preupload"),
    (r"/api/validate-yaml", "POST validate_yaml"),
    (rf"/{REPO}\.git/info/lfs/objects/batch", "POST lfs_batch"),
    (rf"/api/models/{REPO}/commit/main", "POST commit"),
    (r"/api/collections", "GET list_collections"),
    (r"/api/collections", "POST create_collection"),
    (r"/api/collections/(?P<slug>[^/]+/[^/]+)", "GET get_collection"),
    (r"/api/collections/(?P<slug>[^/]+/[^/]+)/items", "POST add_item"),
    (r"/api/collections/(?P<slug>[^/]+/[^/]+)/items/(?P<item>[^/]+)", "PATCH patch_item"),
]
