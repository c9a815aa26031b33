"""Bad input through the real `moeprint` entry point: one `error:` line, exit 2, no traceback, no output left.

Each row is a case the bad-input audit found failing (a traceback, a silent success or a half-written
output) before it was fixed. Inputs are built once per session; the subprocesses run two at a time
because each one pays the torch import.
"""

from __future__ import annotations

import gzip
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click import Group

from conftest import assert_clean_error, run_cli
from prune_helpers import make_plan
from synthetic_runs import token_routed_run


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="session")
def bad(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Valid inputs and damaged copies of them, keyed by what they are."""
    from moeprint.analyze import AnalyzeSettings, analyze_run
    from moeprint.select.plan import save_plan

    root = tmp_path_factory.mktemp("audit")
    p: dict[str, Path] = {"root": root, "model": tiny_model_dir}
    p["run"] = token_routed_run(root / "run", seed=0, domain_shift=1.0, n_prompts_per_domain=4, num_layers=2)
    analyze_run(p["run"], AnalyzeSettings(with_stats=False, coactivation=False), progress=False)

    manifest = json.loads((p["run"] / "manifest.json").read_text())
    p["run_manifest_list"] = _copy_run(p["run"], root / "run_manifest_list")
    (p["run_manifest_list"] / "manifest.json").write_text("[1]")
    p["run_manifest_keys"] = _copy_run(p["run"], root / "run_manifest_keys")
    (p["run_manifest_keys"] / "manifest.json").write_text(json.dumps({**manifest, "num_experts": "eight"}))
    p["run_trunc_traces"] = _copy_run(p["run"], root / "run_trunc_traces")
    for part in (p["run_trunc_traces"] / "traces").glob("*.parquet"):
        _truncate(part)
    p["run_trunc_usage"] = _copy_run(p["run"], root / "run_trunc_usage")
    _truncate(p["run_trunc_usage"] / "fingerprints" / "usage.parquet")

    # the published expert-fingerprinting layout, damaged three ways
    def published(name: str, layout, example) -> Path:
        src = root / name
        (src / "data" / "ds" / "cat").mkdir(parents=True)
        (src / "data" / "map.json").write_text(json.dumps(layout))
        (src / "domains.json").write_text(json.dumps({"law": ["ds/cat"]}))
        with gzip.open(src / "data" / "ds" / "cat" / "A_examples.json.gz", "wt") as f:
            json.dump(example, f)
        return src

    entry = {"sample_count": 1, "summary_file_path": "ds/cat/A.json", "examples_file_path": "ds/cat/A_examples.json"}
    p["pub_map_list"] = published("pub_map_list", [1, 2], {})
    p["pub_map_no_count"] = published("pub_map_no_count", {"ds": {"cat": {"A": {"summary_file_path": "x"}}}}, {})
    p["pub_bad_example"] = published("pub_bad_example", {"ds": {"cat": {"A": entry}}}, {"full_text": 5})

    plan = make_plan(tiny_model_dir, 4)
    p["plan"] = save_plan(plan, root / "plan.json")
    bool_plan = json.loads(p["plan"].read_text())
    bool_plan["kept"][0][1] = True  # JSON true is not expert 1
    p["plan_bool"] = root / "plan_bool.json"
    p["plan_bool"].write_text(json.dumps(bool_plan))

    p["model_copy"] = shutil.copytree(tiny_model_dir, root / "model_copy")
    p["model_garbage"] = shutil.copytree(tiny_model_dir, root / "model_garbage")
    (p["model_garbage"] / "model.safetensors").write_bytes(b"\xff" * 100)

    p["texts"] = root / "texts.jsonl"
    p["texts"].write_text(json.dumps({"text": "a contract binds both parties", "domain": "law"}) + "\n")
    p["texts_latin1"] = root / "texts_latin1.jsonl"
    p["texts_latin1"].write_bytes(b'{"text": "caf\xe9", "domain": "law"}\n')
    p["empty_dir"] = root / "empty_rankings"
    p["empty_dir"].mkdir()
    p["a_file"] = root / "a_file.json"
    p["a_file"].write_text("{}")
    return p


# (case id, argv built from the inputs; "{out}" is a fresh path that must not exist afterwards)
CASES = [
    ("record --out is a file", "record {model} --prompts builtin --limit 1 --max-new-tokens 1 --quiet --out {a_file}"),
    ("import map.json is a list", "import-fingerprinting {pub_map_list} --out {out}"),
    ("import map entry without sample_count", "import-fingerprinting {pub_map_no_count} --out {out}"),
    ("import example file of the wrong shape", "import-fingerprinting {pub_bad_example} --out {out}"),
    ("analyze manifest is a list", "analyze {run_manifest_list} --no-stats"),
    ("analyze manifest num_experts is a string", "analyze {run_manifest_keys} --no-stats"),
    ("analyze truncated trace parquet", "analyze {run_trunc_traces} --no-stats"),
    ("analyze --top-n 0", "analyze {run} --top-n 0 --no-stats --no-coactivation"),
    ("export-rankings truncated usage.parquet", "export-rankings {run_trunc_usage} --criterion frequency --out {out}"),
    ("export-rankings --out is a file", "export-rankings {run} --criterion frequency --out {a_file}"),
    ("classify --apply of a missing run", "classify {run} --apply {root}/no-such-run --token-baseline 0 --out {out}"),
    ("classify --l2 negative", "classify {run} --l2 -1 --out {out}"),
    ("classify --token-baseline negative", "classify {run} --token-baseline -1 --out {out}"),
    ("classify --folds above the prompt count", "classify {run} --folds 50 --token-baseline 0 --out {out}"),
    ("plan --out under a file", "plan {run} --domain law --experts 4 --criterion frequency --out {a_file}/x.json"),
    (
        "prune --out is the model (--overwrite)",
        "prune {model_copy} --plan {plan} --out {model_copy} --overwrite --no-card",
    ),
    ("prune plan with a boolean expert id", "prune {model} --plan {plan_bool} --out {out} --no-card"),
    ("factory empty --rankings-dir", "factory {model} --rankings-dir {empty_dir} --sizes 4 --out {out} --no-card"),
    (
        "factory RUN_DIR and --rankings-dir",
        "factory {model} {run} --rankings-dir {empty_dir} --sizes 4 --out {out} --no-card",
    ),
    ("mask corrupt safetensors", "mask {model_garbage} --plan {plan} --prompt hi"),
    (
        "evaluate corrupt safetensors",
        "evaluate {model_garbage} --plan {plan} --texts {texts} --no-speculative --out {out}.json",
    ),
    (
        "evaluate non-UTF-8 texts",
        "evaluate {model} --plan {plan} --texts {texts_latin1} --no-speculative --out {out}.json",
    ),
    (
        "evaluate --lm-eval-limit 0",
        "evaluate {model} --plan {plan} --texts {texts} --lm-eval x --lm-eval-limit 0 --out {out}.json",
    ),
]


@pytest.fixture(scope="session")
def outcomes(bad) -> dict[str, tuple]:
    """Run every case once (two subprocesses at a time); {case id: (CompletedProcess, out path)}."""

    def one(i_case):
        i, (case_id, template) = i_case
        out = bad["root"] / "outs" / f"o{i}"
        argv = template.format(out=out, **{k: str(v) for k, v in bad.items()}).split()
        return case_id, (run_cli(*argv, timeout=300), out)

    (bad["root"] / "outs").mkdir()
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, enumerate(CASES)))


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_leaves_nothing(outcomes, case_id):
    proc, out = outcomes[case_id]
    assert_clean_error(proc)
    assert proc.returncode == 2, proc.stderr
    leftovers = [
        p.name
        for p in out.parent.iterdir()
        if p.name == out.name or p.name.startswith(f"{out.name}.") or p.name.startswith(f".{out.name}.")
    ]
    assert not leftovers, leftovers


def test_prune_onto_its_own_model_keeps_the_model(outcomes, bad, tiny_model_dir):
    outcomes["prune --out is the model (--overwrite)"]  # the case ran
    assert (bad["model_copy"] / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert (bad["model_copy"] / "config.json").read_text() == (tiny_model_dir / "config.json").read_text()


def test_run_and_input_files_are_untouched(outcomes, bad):
    outcomes["export-rankings --out is a file"]
    assert bad["a_file"].read_text() == "{}"
    assert not (bad["run"] / "classify").exists()  # classify wrote nothing into the train run either


def _commands(group: Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_is_listed_and_has_an_example():
    from moeprint.cli import cli

    top = run_cli("--help", check=True).stdout
    listed = [name for name in cli.commands if f"  {name} " in top]
    assert sorted(listed) == sorted(cli.commands), top
    commands = list(_commands(cli))
    assert len(commands) >= 15
    for name, command in commands:
        if isinstance(command, Group):
            continue
        assert "Example:" in (command.help or ""), f"`moeprint {name} --help` has no Example: line"
