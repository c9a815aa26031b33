"""Stages import only stages below them (issue 12): record < analyze < select < prune < evaluate < report < cli.

The layers are read from this file's LAYERS, the imports from the source (every `import`, including those
inside functions), so a new upward arrow fails here before it becomes a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "moeprint"

# Lowest first. A module may import its own package and anything in its layer or below.
LAYERS: list[set[str]] = [
    {"", "errors", "types", "progress"},  # "" is the package itself (moeprint.__version__)
    {"io", "cluster"},
    {"adapters"},
    {"io.loader"},  # the model loader applies the adapters' load-time hooks (QuantLayout.loading)
    {"prompts"},
    {"record", "importers"},
    {"analyze"},
    {"select"},
    {"prune"},
    {"evaluate"},
    {"report", "publish", "testbed"},
    {"cli", "cli_types", "demo", "__main__"},
]
LEVEL = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit_of(module: str) -> str:
    """`moeprint.select.plan` -> `select`; `moeprint` -> ''."""
    parts = module.split(".")
    if parts[1:3] == ["io", "loader"]:
        return "io.loader"
    return parts[1] if len(parts) > 1 else ""


def imported_modules(module: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every moeprint import in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "moeprint" or name.startswith("moeprint.")]


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    here = LEVEL[unit_of(module)]
    return [
        f"{module}:{line} imports {name} ({unit_of(name) or 'moeprint'} is above {unit_of(module) or 'moeprint'})"
        for line, name in imported_modules(module, source, is_package)
        if LEVEL[unit_of(name)] > here
    ]


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield ".".join(parts[:-1] if is_package else parts), path, is_package


def test_every_unit_has_a_layer():
    units = {unit_of(module) for module, _, _ in _modules()}
    assert units <= set(LEVEL), f"place these in LAYERS: {sorted(units - set(LEVEL))}"


def test_no_stage_imports_a_stage_above_it():
    problems = [p for module, path, pkg in _modules() for p in upward_imports(module, path.read_text(), pkg)]
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source", "upward"),
    [
        ("moeprint.prune.card", "from moeprint.evaluate.results import load_retention\n", True),
        ("moeprint.prune.card", "def f():\n    import moeprint.report.build\n", True),
        ("moeprint.select.plan", "from ..evaluate import cut\n", True),
        ("moeprint.prune.card", "from moeprint.select.plan import load_plan\n", False),
        ("moeprint.evaluate", "from .cut import Cut\n", False),
        ("moeprint.record.runner", "from moeprint.io.run import open_run\nimport json\n", False),
    ],
)
def test_the_checker_sees_upward_imports(module, source, upward):
    is_package = module == "moeprint.evaluate"
    assert bool(upward_imports(module, source, is_package)) is upward
