"""Bridge to lm-evaluation-harness: run `lm_eval.simple_evaluate` on an already-loaded model
(masked or a checkpoint) through HFLM. TASKS are registered task names, or paths to local task
YAML files / folders (read offline through a TaskManager that indexes only those paths).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.evaluate.cut import Cut


def parse_tasks(spec: str) -> tuple[list[str], list[str]]:
    """'a,b,path/to/task.yaml,dir/' -> (task names, include paths). A YAML file adds its folder to the
    include paths and its `task:` name to the tasks; a folder adds every task in it that is named."""
    names, include = [], []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        path = Path(item)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise MoeprintError(f"lm-eval task file {path} does not exist.")
            import yaml

            try:
                config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise MoeprintError(f"{path} is not valid YAML ({e.__class__.__name__}).") from None
            if not isinstance(config, dict) or "task" not in config:
                raise MoeprintError(f"{path} has no `task:` name; it is not an lm-eval task file.")
            include.append(str(path.resolve().parent))
            names.append(str(config["task"]))
        elif path.is_dir():
            include.append(str(path.resolve()))
        else:
            names.append(item)
    if not names:
        raise MoeprintError(f"--lm-eval {spec!r} names no task.")
    return names, sorted(set(include))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def run_lm_eval(cut: Cut, tokenizer, spec: str, batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """{task: {metric: value}} for the cut (metric names as lm-eval reports them, e.g. `acc,none`)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise MoeprintError(f"--lm-eval needs lm-evaluation-harness: pip install 'moeprint[lm-eval]' ({e}).") from None

    names, include = parse_tasks(spec)
    # Only built-in task names need the (slow) index of lm-eval's own task folder.
    manager = TaskManager(
        include_path=include or None, include_defaults=any(n not in _local_names(include) for n in names)
    )
    unknown = [n for n in names if n not in manager.all_tasks and n not in manager.all_groups]
    if unknown:
        raise MoeprintError(f"lm-eval knows no task {unknown[0]!r} (give a registered name or a task YAML path).")
    with cut.active():
        lm = HFLM(pretrained=cut.model, tokenizer=tokenizer, batch_size=batch_size, device=str(cut.model.device))
        try:
            results = simple_evaluate(
                model=lm, tasks=names, task_manager=manager, limit=limit, bootstrap_iters=0, log_samples=False
            )
        except ConnectionError as e:  # the task's dataset is neither cached nor reachable (moeprint runs offline)
            raise MoeprintError(
                f"lm-eval could not get the data of task(s) {', '.join(names)} "
                f"({(str(e).splitlines() or [''])[0]}); cache it first or give a local task YAML."
            ) from None
    if results is None:
        raise MoeprintError("lm-eval returned no results.")
    return {
        task: {k: _clean(v) for k, v in metrics.items() if k not in ("name", "alias")}
        for task, metrics in results["results"].items()
    }


def _local_names(include: list[str]) -> set[str]:
    if not include:
        return set()
    from lm_eval.tasks import TaskManager

    return set(TaskManager(include_path=include, include_defaults=False).all_tasks)
