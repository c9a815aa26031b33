"""The CLI's shared vocabulary (moeprint.cli_types): lists, sizes, ranges and segments mean the same
in every command, and a bad value is one error line (exit 2) before any work."""

from __future__ import annotations

import json

import pytest

from conftest import assert_clean_error, run_cli

# (command line, option the error names, text it must quote); {out} is never created
BAD_VALUES = [
    ("factory {model} --rankings-dir {rankings} --sizes 4x --out {out}", "--sizes", "'4x' is not a count"),
    ("factory {model} --rankings-dir {rankings} --sizes 8-4 --out {out}", "--sizes", "'8-4' is an empty range"),
    ("factory {model} --rankings-dir {rankings} --sizes , --out {out}", "--sizes", "name no size"),
    ("sweep {run} --texts t.jsonl --domains law --sizes 25%x --out {out}", "--sizes", "'25%x' is not a count"),
    ("sweep {run} --texts t.jsonl --domains law --sizes 4 --random-seeds -1 --out {out}", "--random-seeds", "-1"),
    ("sweep {run} --texts t.jsonl --domains law --sizes 4 --max-tokens 1 --out {out}", "--max-tokens", "1"),
    ("evaluate {model} --plan p.json --texts t.jsonl --max-tokens 1 --out {out}", "--max-tokens", "1"),
    ("evaluate {model} --plan p.json --texts t.jsonl --draft-tokens 0 --out {out}", "--draft-tokens", "0"),
    ("evaluate {model} --plan p.json --texts t.jsonl --lm-eval-limit 0 --out {out}", "--lm-eval-limit", "0"),
    ("analyze {run} --permutations 0", "--permutations", "0"),
    ("analyze {run} --bootstrap 1", "--bootstrap", "1"),
    ("analyze {run} --segment thinking", "--segment", "thinking"),
    ("classify {run} --segment everything", "--segment", "everything"),
    ("greedy-plan {run} --domain law --experts 4 --tokens 1 --out {out}", "--tokens", "1"),
    ("greedy-plan {run} --domain law --experts 4 --candidates 0 --out {out}", "--candidates", "0"),
]


@pytest.mark.parametrize(
    ("line", "option", "quoted"), BAD_VALUES, ids=[b[0].split()[0] + " " + b[1] for b in BAD_VALUES]
)
def test_bad_values_fail_in_the_option_before_any_work(tmp_path, line, option, quoted):
    out = tmp_path / "out"
    args = line.format(model=tmp_path / "model", rankings=tmp_path, run=tmp_path / "run", out=out).split()
    proc = run_cli(*args, cwd=tmp_path)
    assert_clean_error(proc)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert option in error and quoted in error, proc.stderr
    assert not out.exists()


def _rankings(folder, domains, num_layers=2, num_experts=8):
    folder.mkdir()
    for i, domain in enumerate(domains):  # a different order per domain and layer
        ranking = {f"layer_{l}": [(e * 3 + i + l) % num_experts for e in range(num_experts)] for l in range(num_layers)}
        (folder / f"{domain}.json").write_text(json.dumps(ranking))
    return folder


def _read(path):
    return path.read_text()


def _summary(out):
    return [(r["domain"], r["n_experts"], r["status"]) for r in json.loads((out / "summary.json").read_text())]


def test_domains_comma_or_repeated_and_sizes_as_percentages(tiny_model_dir, tmp_path):
    """8 experts: 25%,50% are 2 and 4; `--domains law,math` and `--domains law --domains math` are one list."""
    rankings = _rankings(tmp_path / "rankings", ["law", "math", "science"])
    expected = [("law", 2, "written"), ("law", 4, "written"), ("math", 2, "written"), ("math", 4, "written")]
    comma, repeated = tmp_path / "comma", tmp_path / "repeated"
    common = ("factory", tiny_model_dir, "--rankings-dir", rankings, "--no-card")
    run_cli(*common, "--domains", "law,math", "--sizes", "25%,50%", "--out", comma, check=True)
    run_cli(*common, "--domains", "law", "--domains", "math", "--sizes", "2,4", "--out", repeated, check=True)
    assert _summary(comma) == _summary(repeated) == expected
    plans = sorted(
        (p["domain"], p["n_experts"]) for p in map(json.loads, map(_read, comma.glob("*/moeprint_plan.json")))
    )
    assert plans == [(d, n) for d, n, _ in expected]
    rerun = run_cli(*common, "--domains", "law,math", "--sizes", "2-4:2", "--out", comma, check=True)
    assert "0 written, 4 already complete" in rerun.stdout
    assert _summary(comma) == [(d, n, "skipped (complete)") for d, n, _ in expected]


def test_a_size_beyond_the_model_is_one_error_line(tiny_model_dir, tmp_path):
    rankings = _rankings(tmp_path / "rankings", ["law"])
    out = tmp_path / "out"
    proc = run_cli("factory", tiny_model_dir, "--rankings-dir", rankings, "--sizes", "4,9", "--no-card", "--out", out)
    assert_clean_error(proc)
    assert "error: --sizes item '9' is outside 1..8 experts." in proc.stderr and not out.exists()


def _commands(group, prefix=()):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def test_every_command_reads_lists_sizes_and_segments_through_the_shared_types():
    """`--domains` means one thing everywhere: the same type, repeatable, and the same list either way."""
    from moeprint.cli import cli
    from moeprint.cli_types import NAMES, SEGMENT, SIZES

    shared = {"--domains": NAMES, "--criteria": NAMES, "--sizes": SIZES, "--segment": SEGMENT}
    seen = set()
    for name, command in _commands(cli):
        for param in command.params:
            for option in set(shared) & set(param.opts):
                seen.add((name, option))
                assert param.type is shared[option], (name, option)
                assert param.multiple == (shared[option] is NAMES), (name, option)
                if param.multiple:
                    ctx = command.make_context(name, [], resilient_parsing=True)
                    one = param.process_value(ctx, ("law,math",))
                    assert one == param.process_value(ctx, ("law", " math ")) == ["law", "math"]
    assert {c for c, o in seen if o == "--domains"} == {"record", "analyze", "export-rankings", "factory", "sweep"}
    assert {c for c, o in seen if o == "--sizes"} == {"factory", "sweep"}
    assert {c for c, o in seen if o == "--criteria"} == {"analyze", "sweep"}
    assert {c for c, o in seen if o == "--segment"} == {"analyze", "classify"}
