"""`moeprint heal`: a plan in, a healed plan out (the plan + its replacement router rows beside it).

Everything is read and checked before the model loads: settings, the plan against the model's config, the
calibration texts (a run's recorded prompts of the plan's domain, or a JSONL file of `{text[, domain]}` rows)
and the output paths (never the plan itself, never inside the model folder). The rows file is written first
and the healed plan last, so a healed plan on disk always has its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.adapters.base import RouterRows
from moeprint.errors import MoeprintError
from moeprint.evaluate.cut import load_model, read_plan
from moeprint.evaluate.heal import HealResult, HealSettings, heal_rows, split_calibration
from moeprint.evaluate.inputs import file_sha256, read_jsonl
from moeprint.io.loader import LoadSettings
from moeprint.io.shards import DTYPES, list_tensors
from moeprint.progress import Progress
from moeprint.prune.rows import HealedRows, rows_path_for, save_router_rows, with_heal_record
from moeprint.select.plan import save_plan


@dataclass(frozen=True)
class HealOutput:
    plan_path: Path
    rows_path: Path
    result: HealResult


def calibration_texts(*, run_dir: str | Path | None, texts_path: str | Path | None, domain: str) -> list[str]:
    """A run's recorded prompts of `domain`, or the `text` of a JSONL file's rows (of `domain` if rows have one)."""
    if (run_dir is None) == (texts_path is None):
        raise MoeprintError("give exactly one calibration source: --run RUN_DIR or --texts FILE.jsonl.")
    if run_dir is not None:
        from moeprint.select.greedy import run_calibration_texts

        return run_calibration_texts(run_dir, domain)
    out = []
    for lineno, row in read_jsonl(texts_path, "calibration texts"):
        value = row.get("text")
        if not isinstance(value, str):
            raise MoeprintError(f"{texts_path} line {lineno} has no `text` string.")
        if value.strip() and (domain in ("", "all") or row.get("domain") in (None, "", domain)):
            out.append(value)
    if not out:
        raise MoeprintError(f"{texts_path} has no calibration text for domain {domain!r}.")
    return out


def heal_plan(
    model_path: str | Path,
    plan_path: str | Path,
    out: str | Path,
    settings: HealSettings,
    *,
    run_dir: str | Path | None = None,
    texts_path: str | Path | None = None,
    domain: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> HealOutput:
    """Heal `plan_path`'s cut of `model_path`; write `out` (a plan JSON) and its rows file beside it."""
    settings.validate()
    out = Path(out)
    rows_path = rows_path_for(out)
    if out.suffix != ".json":
        raise MoeprintError(f"--out {out} must be a .json file (the healed plan; its rows go beside it).")
    inputs = [Path(plan_path).resolve()] + ([Path(texts_path).resolve()] if texts_path else [])
    model_root = Path(model_path).resolve()
    for target in (out.resolve(), rows_path.resolve()):
        if target in inputs or model_root in target.parents:
            raise MoeprintError(f"{target} is an input (or inside the model folder); choose another --out.")
        if target.exists() and not overwrite:
            raise MoeprintError(f"{target} exists; pass --overwrite to replace it.")
    config = load_config_dict(model_path)
    adapter = adapter_for(config)
    plan = read_plan(plan_path, config)
    texts = calibration_texts(run_dir=run_dir, texts_path=texts_path, domain=domain or plan.domain)
    router_dtypes = _router_dtypes(model_path, adapter, config)

    # Healing trains in float32 whatever the checkpoint stores; the rows are saved in the checkpoint's dtype.
    base = load_model(model_path, LoadSettings(dtype="float32"))  # router rows are fitted in float32
    stride = max(1, len(texts) // max(1, settings.token_budget // settings.window))  # spread over the texts
    calib = split_calibration(base.model, base.tokenizer, texts[::stride], settings)
    total = settings.steps * (base.num_layers if settings.objective == "local" else 1)
    with Progress(disable=not progress) as bar:
        result = heal_rows(
            base.model,
            base.adapter,
            plan.kept,
            calib,
            settings,
            progress=bar.task(f"healing ({settings.objective})", total),
        )
    rows = [
        RouterRows(r.weight.to(dw), None if r.bias is None else r.bias.to(db))
        for r, (dw, db) in zip(result.rows, router_dtypes)
    ]
    info = {
        **result.info(),
        "base_model": str(model_path),
        "source_plan": str(plan_path),
        "calibration": {
            "run": str(run_dir) if run_dir else None,
            "texts": str(texts_path) if texts_path else None,
            "sha256": file_sha256(texts_path) if texts_path else None,
            "n_texts": len(texts[::stride]),
        },
    }
    healed = with_heal_record(plan, HealedRows(plan.kept, (), info), rows_path.name)
    save_router_rows(rows_path, HealedRows(plan.kept, tuple(rows), info, healed.to_json()))
    save_plan(healed, out)
    return HealOutput(out, rows_path, result)


def _router_dtypes(model_path, adapter, config) -> list[tuple[torch.dtype, torch.dtype]]:
    """(weight dtype, bias dtype) of every MoE layer's router as stored on disk."""
    by_name = {t.name: t for t in list_tensors(model_path)}
    out = []
    for layer in adapter.moe_layers(config):
        names = [t.template.format(layer=layer) for t in adapter.router_tensors]
        weight = [DTYPES[by_name[n].dtype][0] for n in names if n in by_name and not n.endswith("bias")]
        bias = [DTYPES[by_name[n].dtype][0] for n in names if n in by_name and n.endswith("bias")]
        if not weight:
            raise MoeprintError(f"{model_path} has no router tensor {names[0]}.")
        out.append((weight[0], (bias or weight)[0]))
    return out
