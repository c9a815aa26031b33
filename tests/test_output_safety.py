"""Nothing lost, nothing escapes (issue 11), through the real `moeprint` entry point.

Outputs never equal, contain or lie inside an input; `--overwrite` replaces only the command's own kind of
output; names read from data never reach the filesystem unchecked; the expected failures are one `error:`
line. Each case is checked for the error AND for its inputs being byte-identical afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import assert_clean_error, run_cli
from prune_helpers import assert_error_line, main_in_process, make_plan
from synthetic_runs import top_k_from_logits, write_run


def _tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root: 'untouched' means this is unchanged."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run_without_think(root: Path) -> Path:
    """A 2-layer x 8-expert run (the tiny model's shape) whose tokens are prompt and answer only."""
    rng = np.random.default_rng(0)
    prompts = []
    for domain in ("law", "math"):
        for i in range(4):
            ids, w = top_k_from_logits(rng.normal(0, 1, (30, 2, 8)), 2)
            prompts.append(
                {
                    "prompt_id": f"{domain}-{i}",
                    "domain": domain,
                    "ids": ids,
                    "weights": w,
                    "token_ids": rng.integers(0, 12, 30),
                    "segments": ["prompt"] * 10 + ["answer"] * 20,
                }
            )
    return write_run(root, prompts, num_experts=8)


def _published(root: Path, domains: dict, entry: dict | None = None, probs: float = 0.6) -> Path:
    """The published expert-fingerprinting layout with one folder ds/cat and one combo A."""
    (root / "data" / "ds" / "cat").mkdir(parents=True)
    entry = entry or {
        "sample_count": 1,
        "summary_file_path": "ds/cat/A.json",
        "examples_file_path": "ds/cat/A_examples.json",
    }
    (root / "data" / "map.json").write_text(json.dumps({"ds": {"cat": {"A": entry}}}))
    (root / "domains.json").write_text(json.dumps(domains))
    layers = {f"layer_{l}": {"selected_experts": [l, 3], "selected_probs": [probs, 1 - probs]} for l in range(2)}
    example = {
        "full_text": ["a", "b", "c", "d"],
        "generated_only": ["c", "d"],
        "finished_successfully": True,
        "original_prompt": "ab",
        "router_data": [{"token_2": layers}, {"token_3": layers}],
    }
    with gzip.open(root / "data" / "ds" / "cat" / "A_examples.json.gz", "wt") as f:
        f.write(json.dumps(example))  # json.dumps writes NaN when a case asks for it
    return root


def _ok(capsys, *args) -> None:
    code, err = main_in_process(capsys, *args)
    assert code == 0, err


@pytest.fixture(scope="session")
def inp(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    from arch_helpers import build_tiny
    from moeprint.analyze import AnalyzeSettings, analyze_run
    from moeprint.select.plan import save_plan

    root = tmp_path_factory.mktemp("safety")
    p: dict[str, Path] = {"root": root, "model": tiny_model_dir}
    p["run"] = _run_without_think(root / "run")
    analyze_run(p["run"], AnalyzeSettings(with_stats=False, coactivation=False), progress=False)
    p["run2"] = shutil.copytree(p["run"], root / "run2")
    p["pub"] = _published(root / "pub", {"law": ["ds/cat"]})
    p["pub_dotdot"] = _published(root / "pub_dotdot", {"../../../../x": ["ds/cat"]})
    p["pub_abs"] = _published(root / "pub_abs", {str(root / "abs" / "x"): ["ds/cat"]})
    p["pub_escape"] = _published(
        root / "pub_escape",
        {"law": ["ds/cat"]},
        {"sample_count": 1, "examples_file_path": "../../../outside_examples.json"},
    )
    p["pub_nan"] = _published(root / "pub_nan", {"law": ["ds/cat"]}, probs=float("nan"))

    manifest = json.loads((p["run"] / "manifest.json").read_text())
    p["run_bad_domain"] = shutil.copytree(p["run"], root / "run_bad_domain")
    (p["run_bad_domain"] / "manifest.json").write_text(json.dumps({**manifest, "domains": ["../../../../x", "law"]}))
    p["run_nan_count"] = shutil.copytree(p["run"], root / "run_nan_count")
    (p["run_nan_count"] / "manifest.json").write_text(json.dumps({**manifest, "n_tokens": float("nan")}))
    p["run_nan_weights"] = shutil.copytree(p["run"], root / "run_nan_weights")
    part = next((p["run_nan_weights"] / "traces").glob("part-*.parquet"))
    table = pq.read_table(part).to_pydict()
    table["weights"][0][0] = float("nan")
    pq.write_table(pq.read_table(part).from_pydict(table, pq.read_schema(part)), part)

    p["plan"] = save_plan(make_plan(tiny_model_dir, 4), root / "plan.json")
    p["plan_bad_domain"] = root / "plan_bad_domain.json"
    p["plan_bad_domain"].write_text(json.dumps({**json.loads(p["plan"].read_text()), "domain": "../../x"}))
    p["model_copy"] = shutil.copytree(tiny_model_dir, root / "model_copy")
    p["model_garbage"] = shutil.copytree(tiny_model_dir, root / "model_garbage")
    (p["model_garbage"] / "model.safetensors").write_bytes(b"\xff" * 100)
    p["mixtral"] = build_tiny(root / "mixtral", "mixtral")
    p["texts"] = root / "texts.jsonl"
    p["texts"].write_text(json.dumps({"text": "a contract binds both parties to it", "domain": "law"}) + "\n")
    p["a_file"] = root / "a_file.txt"
    p["a_file"].write_text("keep")
    p["link"] = root / "link.json"
    p["link"].symlink_to(p["a_file"])
    p["foreign"] = root / "foreign"
    p["foreign"].mkdir()
    (p["foreign"] / "notes.txt").write_text("mine")
    p["long"] = root / ("x" * 260 + ".json")
    return p


SWEEP = "sweep {run} --model {model} --texts {texts} --domains all --sizes 4 --criteria frequency --random-seeds 0"
# (case id, argv template, what the error must say); "{out}" is a fresh path that must not exist afterwards
CASES = [
    ("site --out is the run", "site {run} --out {run}", "input"),
    ("site --out is inside the run's data", "site {run} --out {run}/fingerprints", "is an input"),
    ("site --out is another complete run", "site {run} --out {run2}", "not a moeprint site"),
    ("sweep --out is the run, --overwrite", SWEEP + " --overwrite --out {run}", "input"),
    ("import --out is its source, --overwrite", "import-fingerprinting {pub} --out {pub} --overwrite", "input"),
    (
        "import --overwrite of a recorded run",
        "import-fingerprinting {pub} --out {run2} --overwrite",
        "not a moeprint imported",
    ),
    ("evaluate --out is its texts", "evaluate {model} --plan {plan} --texts {texts} --out {texts}", "input"),
    ("export-rankings --out contains the run", "export-rankings {run} --criterion frequency --out {root}", "contains"),
    ("prune --out inside the model", "prune {model_copy} --plan {plan} --out {model_copy}/cut --no-card", "inside"),
    ("import domain that climbs out", "import-fingerprinting {pub_dotdot} --out {out}", "domain name"),
    ("import absolute domain", "import-fingerprinting {pub_abs} --out {out}", "domain name"),
    ("import map path that leaves the source", "import-fingerprinting {pub_escape} --out {out}", "leaves"),
    ("import NaN router probabilities", "import-fingerprinting {pub_nan} --out {out}", "NaN"),
    ("analyze manifest domain that climbs out", "analyze {run_bad_domain} --no-stats", "domain name"),
    (
        "export-rankings manifest domain that climbs out",
        "export-rankings {run_bad_domain} --criterion frequency --out {out}",
        "domain name",
    ),
    ("analyze manifest with NaN counts", "analyze {run_nan_count} --no-stats", "n_tokens"),
    ("analyze NaN gate weights", "analyze {run_nan_weights} --criteria gate-mass --no-stats", "NaN"),
    (
        "plan --domain that climbs out",
        "plan {run} --domain ../../x --experts 4 --criterion frequency --out {out}.json",
        "domain name",
    ),
    (
        "prune a plan whose domain climbs out",
        "prune {model} --plan {plan_bad_domain} --out {out} --no-card",
        "domain name",
    ),
    ("analyze segment without tokens", "analyze {run} --segment think --no-stats", "no routed tokens"),
    ("classify segment without tokens", "classify {run} --segment think --token-baseline 0 --out {out}", "think"),
    ("plan --out name of 260 bytes", "plan {run} --domain law --experts 4 --criterion frequency --out {long}", "bytes"),
    ("evaluate --out is a symlink", "evaluate {model} --plan {plan} --texts {texts} --out {link}", "symbolic link"),
    ("sweep --out is a file", SWEEP + " --out {a_file}", "is a file"),
    (
        "evaluate --checkpoint of another architecture",
        "evaluate {model} --checkpoint {mixtral} --texts {texts} --no-speculative --out {out}.json",
        "architecture",
    ),
    (
        "evaluate --out checked before the model loads",
        "evaluate {model_garbage} --plan {plan} --texts {texts} --out {a_file}/result.json",
        "not a writable directory",
    ),
    (
        "sweep --out checked before the model loads",
        "sweep {run} --model {model_garbage} --texts {texts} --domains all --sizes 4 --criteria frequency "
        "--random-seeds 0 --unverified-calibration --out {foreign}",
        "foreign",
    ),
]


@pytest.mark.parametrize("case_id,template,expected", CASES, ids=[c[0] for c in CASES])
def test_case_is_one_error_line_and_changes_nothing(inp, capsys, case_id, template, expected):
    """Through `moeprint.cli.main` in this process (the console script's function; subprocesses would pay
    the torch import 26 times): exit 2, one `error:` line, no output, every input byte-identical."""
    watched = ("run", "run2", "pub", "model_copy", "foreign")
    before = {name: _tree_digest(inp[name]) for name in watched}
    out = inp["root"] / "outs" / case_id.replace(" ", "_").replace("'", "")
    out.parent.mkdir(exist_ok=True)
    argv = template.format(out=out, **{k: str(v) for k, v in inp.items()}).split()
    code, err = main_in_process(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith(("error:", "Error:")), err
    assert expected in err, err
    assert not [
        p for p in out.parent.iterdir() if p.name == out.name or p.name.startswith((f"{out.name}.", f".{out.name}."))
    ]
    assert {name: _tree_digest(inp[name]) for name in watched} == before
    assert inp["a_file"].read_text() == "keep"
    assert not list(inp["root"].parent.rglob("x.json")) and not (inp["root"] / "abs").exists()
    assert not (inp["run"] / "site").exists() and not (inp["run"] / "classify").exists()


def test_site_and_import_replace_only_their_own_output(inp, tmp_path, capsys):
    """Rebuilding a site, or --overwrite of an import, replaces the command's own earlier output, leaving no
    temp, aside or lock file behind; the run it reads is unchanged."""
    run = shutil.copytree(inp["run"], tmp_path / "run")
    before = _tree_digest(run)
    for _ in range(2):
        _ok(capsys, "site", run)
    assert json.loads((run / "site" / "manifest.json").read_text())["kind"] == "site"
    assert {k: v for k, v in _tree_digest(run).items() if not k.startswith("site/")} == before
    imported = tmp_path / "imported"
    _ok(capsys, "import-fingerprinting", inp["pub"], "--out", imported)
    code, err = main_in_process(capsys, "import-fingerprinting", inp["pub"], "--out", imported)
    assert_error_line(code, err, "--overwrite")
    _ok(capsys, "import-fingerprinting", inp["pub"], "--out", imported, "--overwrite")
    assert json.loads((imported / "manifest.json").read_text())["kind"] == "imported"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_second_writer_to_one_output_is_refused(inp, tmp_path, capsys):
    """While one process writes an output (it holds the lock), a second prune to it fails at once, saying
    why; once the first is done the same command succeeds."""
    from moeprint.io.outputs import OutputLock

    out = tmp_path / "cut"
    with OutputLock(out):
        proc = run_cli("prune", inp["model"], "--plan", inp["plan"], "--out", out, "--no-card")
        assert_clean_error(proc)
        assert "another moeprint process is writing" in proc.stderr and not out.exists()
    _ok(capsys, "prune", inp["model"], "--plan", inp["plan"], "--out", out, "--no-card")
    assert (out / "moeprint_plan.json").exists() and not list(tmp_path.glob(".cut*"))


def test_killed_overwrite_leaves_the_old_output_which_the_next_writer_restores(inp, tmp_path, capsys):
    """A kill between 'old folder renamed aside' and 'new folder renamed in' leaves `.NAME.<id>.old` and no
    NAME; the next writer of NAME puts the old one back before it starts, and removes a dead writer's temp."""
    from moeprint.io.atomic import atomic_directory

    run = shutil.copytree(inp["run"], tmp_path / "run")
    _ok(capsys, "site", run)
    old = _tree_digest(run / "site")
    (run / "site").rename(run / ".site.0123abcd.old")  # the state a SIGKILL at that moment leaves
    (run / ".site.deadbeef.partial").mkdir()  # and a dead writer's temp folder
    target = atomic_directory(run / "site", overwrite=True, kind="site")  # what `moeprint site` does first
    assert _tree_digest(run / "site") == old
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".site.lock"]
    target.lock.release()
    _ok(capsys, "site", run)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_mask_prompt_with_control_bytes_is_refused(inp, capsys):
    code, err = main_in_process(capsys, "mask", inp["model"], "--plan", inp["plan"], "--prompt", "hello\x07\x1b[31m")
    assert_error_line(code, err, "control characters")


def test_a_write_the_filesystem_refuses_is_one_error_line(inp, tmp_path):
    """record under a 4 KB file-size limit: the write fails with EFBIG (as a full disk fails with ENOSPC;
    Python ignores SIGXFSZ), and the run is left unfinished, never complete."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    cmd = (
        f"ulimit -f 4; exec {sys.executable} -m moeprint record {inp['model']} --prompts builtin --limit 4 "
        f"--max-new-tokens 24 --batch-size 4 --quiet --logits --out {out}"
    )
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    assert_clean_error(proc)
    assert proc.returncode == 2 and "too large" in proc.stderr.lower(), proc.stderr
    assert not (out / "manifest.json").exists()


def test_every_command_that_writes_passes_the_one_output_guard():
    """Each command, subcommands included, is a guarded command, and each of its `--out` options lands in a
    parameter the guard reads: a new command cannot skip the check."""
    import click

    from moeprint.cli import OUTPUT_PARAMS, _GuardedCommand, cli

    def commands(group):
        for command in group.commands.values():
            yield from commands(command) if isinstance(command, click.Group) else [command]

    found = list(commands(cli))
    assert len(found) >= 15
    for command in found:
        assert isinstance(command, _GuardedCommand), command.name
        for param in command.params:
            if "--out" in getattr(param, "opts", []):
                assert param.name in OUTPUT_PARAMS, (command.name, param.name)


def test_a_domain_without_tokens_in_the_segment_gets_no_ranking(tmp_path, capsys):
    """law has answer tokens, math only prompt tokens: `analyze --segment answer` ranks law and `all` (from
    law's tokens alone) and writes no ranking for math, so `plan` cannot use an identity order for it."""
    rng = np.random.default_rng(1)
    prompts = []
    for domain, segment in (("law", "answer"), ("math", "prompt")):
        for i in range(3):
            ids, w = top_k_from_logits(rng.normal(0, 1, (20, 2, 8)), 2)
            prompts.append(
                {
                    "prompt_id": f"{domain}-{i}",
                    "domain": domain,
                    "ids": ids,
                    "weights": w,
                    "token_ids": rng.integers(0, 12, 20),
                    "segments": [segment] * 20,
                }
            )
    run = write_run(tmp_path / "run", prompts, num_experts=8)
    _ok(capsys, "analyze", run, "--segment", "answer", "--criteria", "frequency", "--no-stats", "--no-coactivation")
    ranked = sorted(p.name for p in (run / "fingerprints" / "rankings" / "frequency").iterdir())
    assert ranked == ["all.json", "law.json"]
    law = json.loads((run / "fingerprints" / "rankings" / "frequency" / "law.json").read_text())
    counts = np.zeros((2, 8))  # law's tokens per (layer, expert), counted here
    for p in prompts[:3]:
        for layer in range(2):
            np.add.at(counts[layer], p["ids"][:, layer, :].ravel().astype(int), 1)
    for layer in range(2):  # frequency order: every expert listed, counts non-increasing along the ranking
        order = law[f"layer_{layer}"]
        assert sorted(order) == list(range(8)) and np.all(np.diff(counts[layer][order]) <= 0)
    code, err = main_in_process(
        capsys,
        "plan",
        run,
        "--domain",
        "math",
        "--experts",
        "4",
        "--criterion",
        "frequency",
        "--out",
        tmp_path / "math.json",
    )
    assert_error_line(code, err, "unknown domain 'math'")
