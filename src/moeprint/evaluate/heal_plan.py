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
from moeprint.types import ALL, PrunePlan


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
        if value.strip() and (domain in ("", ALL) or row.get("domain") in (None, "", domain)):
            out.append(value)
    if not out:
        raise MoeprintError(f"{texts_path} has no calibration text for domain {domain!r}.")
    return out


class Healer:
    """Heals plan after plan with one loaded model: `moeprint heal`, and `prune --heal` / `factory --heal`
    (which write the healed rows into the checkpoint instead of a rows file). `check` reads a plan's
    calibration texts without loading the model, so bad input fails before anything is written."""

    def __init__(
        self,
        model_path: str | Path,
        settings: HealSettings,
        *,
        run_dir: str | Path | None = None,
        texts_path: str | Path | None = None,
        domain: str | None = None,
        load: LoadSettings = LoadSettings(),
        progress: bool = True,
    ):
        self.model_path, self.settings = model_path, settings.validate()
        self.run_dir, self.texts_path, self.domain = run_dir, texts_path, domain
        if (run_dir is None) == (texts_path is None):
            raise MoeprintError("give exactly one calibration source: a run's recorded prompts or a JSONL file.")
        self.load, self.progress = load, progress
        self._texts: dict[str, list[str]] = {}
        self._base = None
        self._dtypes = None

    def check(self, plan: PrunePlan) -> list[str]:
        """The calibration texts `plan` heals on (its domain's, unless a domain was given)."""
        if plan.extra.get("heal"):
            raise MoeprintError(f"plan {plan.domain}/{plan.n_experts} is already healed; heal the plan it came from.")
        domain = self.domain or plan.domain
        if domain not in self._texts:
            texts = calibration_texts(run_dir=self.run_dir, texts_path=self.texts_path, domain=domain)
            stride = max(1, len(texts) // max(1, self.settings.token_budget // self.settings.window))
            self._texts[domain] = texts[::stride]  # the budget spread over the texts
        return self._texts[domain]

    def heal(self, plan: PrunePlan) -> tuple[PrunePlan, list[RouterRows], HealResult]:
        """(the plan with `extra.heal`, the rows in the checkpoint's router dtypes, the fit's record)."""
        texts = self.check(plan)
        if self._base is None:
            config = load_config_dict(self.model_path)
            self._dtypes = _router_dtypes(self.model_path, adapter_for(config), config)
            # The model runs where and in the dtype `load` says; the trainable rows and Adam's moments stay
            # float32 and the mask casts them to the router's dtype in its matmul.
            self._base = load_model(self.model_path, self.load)
        base, settings = self._base, self.settings
        calib = split_calibration(base.model, base.tokenizer, texts, settings)
        total = settings.steps * (base.num_layers if settings.objective == "local" else 1)
        with Progress(disable=not self.progress) as bar:
            result = heal_rows(
                base.model,
                base.adapter,
                plan.kept,
                calib,
                settings,
                progress=bar.task(f"healing {plan.domain}/{plan.n_experts} ({settings.objective})", total),
            )
        rows = [  # saved in the checkpoint's dtype
            RouterRows(r.weight.to(dw), None if r.bias is None else r.bias.to(db))
            for r, (dw, db) in zip(result.rows, self._dtypes)
        ]
        info = {
            **result.info(),
            "base_model": str(self.model_path),
            "load": {
                "device": self.load.device,
                "dtype": self.load.dtype,
                "model_dtype": str(base.model.dtype).removeprefix("torch."),
            },
            "calibration": {
                "run": str(self.run_dir) if self.run_dir else None,
                "texts": str(self.texts_path) if self.texts_path else None,
                "sha256": file_sha256(self.texts_path) if self.texts_path else None,
                "n_texts": len(texts),
            },
        }
        return with_heal_record(plan, HealedRows(plan.kept, (), info)), rows, result


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
    load: LoadSettings = LoadSettings(),
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
    if (run_dir is None) == (texts_path is None):
        raise MoeprintError("give exactly one calibration source: --run RUN_DIR or --texts FILE.jsonl.")
    plan = read_plan(plan_path, load_config_dict(model_path))
    healer = Healer(
        model_path, settings, run_dir=run_dir, texts_path=texts_path, domain=domain, load=load, progress=progress
    )
    healer.check(plan)
    healed, rows, result = healer.heal(plan)
    healed.extra["heal"]["source_plan"] = str(plan_path)
    healed = with_heal_record(plan, HealedRows(plan.kept, (), healed.extra["heal"]), rows_path.name)
    save_router_rows(rows_path, HealedRows(plan.kept, tuple(rows), healed.extra["heal"], healed.to_json()))
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
