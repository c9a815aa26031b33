"""`moeprint publish`: the plan from local files (dry run), and the upload calls against a stand-in hub.

The stand-in (tests/hub_standin.py) is a local HTTP server on 127.0.0.1 that answers the hub API
endpoints the command uses; HF_ENDPOINT points huggingface_hub at it. hf_xet is disabled
(HF_HUB_DISABLE_XET=1) so uploads take huggingface_hub's plain LFS + commit path, which the
stand-in implements; the xet upload protocol is not exercised here.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from conftest import run_cli
from hub_standin import READ_TOKEN, WRITE_TOKEN, StandinHub
from moeprint.testbed.synthetic import build_mxfp4_model
from prune_helpers import assert_error_line, main_in_process

# The reference project's eight ranking files (topical_analytics/<domain>.json) and its 29 sizes.
REFERENCE_DOMAINS = (
    "all",
    "health_or_medicine",
    "instruction_following",
    "law",
    "math",
    "safety",
    "science",
    "unsafety",
)


def _factory(root, domains, sizes, num_experts=32):
    """A real factory output of a small synthetic gpt-oss (1 layer x 32 experts, MXFP4)."""
    model = build_mxfp4_model(
        root / "base",
        num_layers=1,
        num_experts=num_experts,
        top_k=4,
        hidden_size=32,
        intermediate_size=32,
        vocab_size=300,
    )
    rankings = root / "rankings"
    rankings.mkdir()
    for d, domain in enumerate(domains):
        ids = list(range(num_experts))
        random.Random(d).shuffle(ids)
        (rankings / f"{domain}.json").write_text(json.dumps({"layer_0": ids}))
    out = root / "checkpoints"
    run_cli(
        "factory",
        model,
        "--rankings-dir",
        rankings,
        "--sizes",
        sizes,
        "--out",
        out,
        "--base-model-id",
        "openai/gpt-oss-20b",
        "--criterion",
        "frequency",
        timeout=1800,
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def factory_232(tmp_path_factory):
    return _factory(tmp_path_factory.mktemp("f232"), REFERENCE_DOMAINS, "4-32")


@pytest.fixture(scope="module")
def small_factory(tmp_path_factory):
    """Shared by the tests below; each restores what it changes except the upload test's edited card."""
    return _factory(tmp_path_factory.mktemp("small"), ("law", "math"), "4,8,16")


@pytest.mark.slow
def test_dry_run_232_has_the_reference_layout(factory_232):
    proc = run_cli(
        "publish",
        factory_232,
        "--namespace",
        "moe-org",
        "--collections",
        "--dry-run",
        "--quiet",
        check=True,
        env={"HF_TOKEN": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )  # no hub needed
    plan = json.loads(proc.stdout)
    summary = json.loads((factory_232 / "summary.json").read_text())
    assert len(plan["repos"]) == 232 == len(summary)
    assert {r["repo_id"] for r in plan["repos"]} == {f"moe-org/{row['name']}" for row in summary}
    for repo in plan["repos"][::29]:  # files: every file of the folder, sizes and sha256 recomputed here
        folder = factory_232 / repo["repo_id"].split("/")[1]
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert [f["path"] for f in repo["files"]] == on_disk
        for f in repo["files"]:
            data = (folder / f["path"]).read_bytes()
            assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    main, *domain_collections = plan["collections"]
    assert main["domain"] is None and len(main["items"]) == 232
    assert sorted(c["domain"] for c in domain_collections) == sorted(REFERENCE_DOMAINS)
    params = {f"moe-org/{row['name']}": row["n_parameters"] for row in summary}
    experts = {f"moe-org/{row['name']}": row["n_experts"] for row in summary}
    for c in domain_collections:
        assert len(c["items"]) == 29
        ids = [i["repo_id"] for i in c["items"]]
        assert [i["position"] for i in c["items"]] == list(range(29))
        assert [params[i] for i in ids] == sorted(params[i] for i in ids)  # ordered by size
        assert [experts[i] for i in ids] == list(range(4, 33))
        for item in c["items"]:
            assert item["note"].startswith(f"{experts[item['repo_id']]} of 32 experts per layer, frequency criterion")
    assert [params[i["repo_id"]] for i in main["items"]] == sorted(params.values())
    assert len({c["title"] for c in plan["collections"]}) == 9
    # the factory's plan records name the base folder by its absolute path: flagged before anything is public
    base = str(factory_232.parent / "base")
    assert (
        all(any(base in w for w in r["warnings"]) for r in plan["repos"])
        and "warning: 232 checkpoint(s)" in proc.stderr
    )


def _env(hub, token=WRITE_TOKEN, tmp=None):
    return {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(tmp / "hf-home"),
        "MOEPRINT_HUB_BACKOFF": "0",
    }


def _in_process(capsys, monkeypatch, hub, tmp, *args) -> str:
    """The same entry point in this process (no interpreter start-up): huggingface_hub reads its endpoint,
    xet switch and token path from `constants` at call time."""
    from huggingface_hub import constants

    from moeprint.cli import main

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp / "no-token-file"))
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    monkeypatch.setenv("MOEPRINT_HUB_BACKOFF", "0")
    capsys.readouterr()
    main([str(a) for a in args])
    return capsys.readouterr().out


def test_upload_to_the_standin_is_idempotent(small_factory, tmp_path, capsys, monkeypatch):
    names = [row["name"] for row in json.loads((small_factory / "summary.json").read_text())]
    with StandinHub() as hub:
        hub.state.fail.append(("POST", r"/commit/main$", 429))  # one rate-limit answer: retried, not fatal
        args = ("publish", small_factory, "--namespace", "moe-org", "--collections", "--private", "--quiet")
        first = run_cli(*args, env=_env(hub, tmp=tmp_path), check=True)
        assert "6 updated" in first.stdout and "1 retries" in first.stdout
        state = hub.state
        assert set(state.repos) == {f"moe-org/{n}" for n in names}
        for name in names:  # every file arrived byte for byte
            repo = state.repos[f"moe-org/{name}"]
            assert repo.private
            folder = small_factory / name
            local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
            assert {path: content for path, (content, _) in repo.files.items()} == local
            assert repo.files["model.safetensors.index.json"][1] is None  # small JSON: a regular file
            assert all(lfs for path, (_, lfs) in repo.files.items() if path.endswith(".safetensors"))
        collections = {c["title"]: c for c in state.collections.values()}
        assert len(collections) == 3
        law = next(c for c in collections.values() if "Law" in c["title"])
        assert [i["id"].rsplit("-", 2)[-2] for i in law["items"]] == ["4", "8", "16"]  # ordered by size
        assert all(i["note"]["text"].endswith("law") for i in law["items"])

        # rerun: nothing changes, nothing is duplicated, no commit is made
        commits = {r: len(repo.commits) for r, repo in state.repos.items()}
        second = _in_process(capsys, monkeypatch, hub, tmp_path, *args)
        assert "0 updated (0 files), 6 unchanged" in second and "0 items added, 0 updated" in second
        assert {r: len(repo.commits) for r, repo in state.repos.items()} == commits
        assert len(state.collections) == 3 and sum(len(c["items"]) for c in state.collections.values()) == 12

        # a changed card is re-uploaded alone; a reordered collection is put back in size order
        changed = small_factory / names[0] / "README.md"
        changed.write_text(changed.read_text() + "\nEdited.\n")
        law["items"].reverse()
        for position, item in enumerate(law["items"]):
            item["position"] = position
        third = _in_process(capsys, monkeypatch, hub, tmp_path, *args)
        assert "1 updated (1 files)" in third
        assert state.repos[f"moe-org/{names[0]}"].commits[-1] == ["README.md"]
        assert state.repos[f"moe-org/{names[0]}"].files["README.md"][0] == changed.read_bytes()
        assert [i["id"].rsplit("-", 2)[-2] for i in sorted(law["items"], key=lambda i: i["position"])] == [
            "4",
            "8",
            "16",
        ]


def test_publish_errors_are_one_line(small_factory, tmp_path, capsys, monkeypatch):
    """In process (fast): huggingface_hub reads its endpoint and token path from `constants` when a call is made."""
    from huggingface_hub import constants

    with StandinHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))

        def fails(message, *args, token=WRITE_TOKEN):
            monkeypatch.setenv("HF_TOKEN", token)
            assert_error_line(*main_in_process(capsys, "publish", small_factory, "--quiet", *args), message)

        fails("no Hugging Face token", "--namespace", "moe-org", token="")
        fails("token was refused", "--namespace", "moe-org", token="hf_wrong")
        fails("read-only", "--namespace", "alice", token=READ_TOKEN)
        fails("cannot write to namespace 'someone-else'", "--namespace", "someone-else")
        fails("role 'read' in 'viewers'", "--namespace", "viewers")
        fails("not a valid hub name", "--namespace", "bad--name")
        assert hub.state.repos == {}  # nothing was created by any failed run
        assert {m for m, _ in hub.state.requests} == {"GET"}  # whoami only; nothing written

        name = json.loads((small_factory / "summary.json").read_text())[0]["name"]
        (small_factory / name / "moeprint_plan.json").rename(tmp_path / "plan.json")
        fails("incomplete: no moeprint_plan.json", "--namespace", "moe-org", "--dry-run")
        (tmp_path / "plan.json").rename(small_factory / name / "moeprint_plan.json")
        index = json.loads((small_factory / name / "model.safetensors.index.json").read_text())
        shard = sorted(set(index["weight_map"].values()))[0]
        (small_factory / name / shard).rename(tmp_path / shard)
        fails(f"names shard {shard}, which is missing", "--namespace", "moe-org")
        (tmp_path / shard).rename(small_factory / name / shard)
        assert {m for m, _ in hub.state.requests} == {"GET"}  # incomplete folders: refused before any write


def test_dry_run_needs_no_token_and_changes_nothing(small_factory, capsys):
    before = sorted((p.as_posix(), p.stat().st_mtime_ns) for p in small_factory.rglob("*"))
    code, _ = main_in_process(capsys, "publish", small_factory, "--namespace", "moe-org", "--dry-run")
    assert code == 0
    assert sorted((p.as_posix(), p.stat().st_mtime_ns) for p in small_factory.rglob("*")) == before
    assert_error_line(
        *main_in_process(capsys, "publish", small_factory / "nope", "--namespace", "x", "--dry-run"), "does not exist"
    )
