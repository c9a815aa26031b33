"""The one plan dispatch: where a plan's experts come from -> a validated PrunePlan.

A `PlanSource` names one origin: a run's fingerprint rankings, a published-format ranking file, an
llm-compressor REAP report, or a seeded random draw. `build_plan(source, n)` is what `moeprint plan`,
the factory and the sweep's random floor call; each origin's own builder lives in `plan.py` or here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.importers.llmcompressor import KeptReport, read_report
from moeprint.select.plan import (
    file_calibration,
    model_signature,
    plan_from_ranking,
    plan_from_ranking_file,
    plan_from_run,
    validate_plan,
)
from moeprint.select.rankings import random_kept
from moeprint.types import PrunePlan

RANDOM = "random"  # the criterion of a seeded random draw (the floor every criterion must beat)


@dataclass(frozen=True)
class PlanSource:
    """Exactly one of `run_dir`, `ranking`, `llmcompressor` or `random_seed` says where the experts come
    from; `model` is the model folder the plan is for (needed by all but a run, which records its model)."""

    run_dir: str | Path | None = None
    ranking: str | Path | None = None
    llmcompressor: str | Path | None = None
    random_seed: int | None = None
    model: str | Path | None = None
    domain: str | None = None
    criterion: str | None = None

    def check(self) -> PlanSource:
        """One origin, with the model it needs; the errors name the CLI options of `moeprint plan`."""
        if self.llmcompressor is not None:
            if self.model is None or self.run_dir is not None or self.ranking is not None:
                raise MoeprintError("--from-llmcompressor needs --model MODEL and neither RUN_DIR nor --ranking.")
        elif self.ranking is not None:
            if self.model is None or self.run_dir is not None:
                raise MoeprintError("--ranking needs --model MODEL (the model the plan is for) and no RUN_DIR.")
        elif self.random_seed is not None:
            if self.model is None or self.run_dir is not None:
                raise MoeprintError("a random plan needs a model folder and no run directory.")
        elif self.run_dir is None or self.domain is None:
            raise MoeprintError("give RUN_DIR and --domain (or --ranking FILE --model MODEL).")
        return self


def build_plan(source: PlanSource, n_experts: int | None) -> PrunePlan:
    """The validated plan of `source` keeping `n_experts` per layer (None only for a report of kept experts)."""
    source.check()
    if source.llmcompressor is not None:
        return plan_from_llmcompressor(source.llmcompressor, source.model, n_experts, domain=source.domain)
    if n_experts is None:
        raise MoeprintError("say how many experts to keep with --experts N.")
    if source.ranking is not None:
        return plan_from_ranking_file(
            source.ranking, source.model, n_experts, domain=source.domain, criterion=source.criterion or "published"
        )
    if source.random_seed is not None:
        return random_plan(source.model, n_experts, source.random_seed)
    return plan_from_run(source.run_dir, source.domain, n_experts, source.criterion)


def random_plan(model_dir: str | Path, n_experts: int, seed: int, config: dict | None = None) -> PrunePlan:
    """N experts per layer drawn at random (`random_kept`), validated against the model; no domain."""
    config = config if config is not None else load_config_dict(model_dir)
    adapter, signature = adapter_for(config), model_signature(config)
    plan = PrunePlan(
        str(model_dir),
        signature.architecture,
        "",
        RANDOM,
        n_experts,
        signature.top_k,
        random_kept(signature.num_layers, signature.num_experts, n_experts, seed, adapter.expert_groups(config)),
        extra={"seed": seed},
        base_num_experts=signature.num_experts,
    )
    return validate_plan(plan, signature)


def plan_from_llmcompressor(
    path: str | Path, model_dir: str | Path, n_experts: int | None = None, domain: str | None = None
) -> PrunePlan:
    """A validated plan from an llm-compressor REAP report: its kept experts (REAPPruningModifier
    report_path) or, with `n_experts`, the N most salient experts per layer of a saliency report."""
    path = Path(path)
    config = load_config_dict(model_dir)
    signature = model_signature(config)
    report = read_report(path)
    domain = domain or path.name.split(".json")[0]
    if isinstance(report, KeptReport):
        moe_layers = adapter_for(config).moe_layers(config)
        if list(report.kept) != moe_layers:
            raise MoeprintError(
                f"{path} lists decoder layers {list(report.kept)[:8]}, but the model's MoE layers "
                f"are {moe_layers[:8]}; was it written for another model?"
            )
        sizes = {len(k) for k in report.kept.values()}
        if len(sizes) != 1:
            raise MoeprintError(
                f"{path} keeps {sorted(sizes)} experts in different layers; moeprint plans keep "
                "the same number in every layer."
            )
        kept_n = sizes.pop()
        if n_experts is not None and n_experts != kept_n:
            raise MoeprintError(f"{path} keeps {kept_n} experts per layer; --experts {n_experts} disagrees.")
        plan = PrunePlan(
            base_model=str(model_dir),
            architecture=signature.architecture,
            domain=domain,
            criterion="llmcompressor-reap",
            n_experts=kept_n,
            top_k=signature.top_k,
            kept=tuple(report.kept[layer] for layer in moe_layers),
            extra={"ranking_source": str(path)},
            base_num_experts=signature.num_experts,
        )
        plan = validate_plan(plan, signature)
    else:
        if n_experts is None:
            raise MoeprintError(f"{path} is a saliency report; say how many experts to keep with --experts N.")
        if report.num_layers != signature.num_layers or len(report.saliency[0]) != signature.num_experts:
            raise MoeprintError(
                f"{path} scores {report.num_layers} layers x {len(report.saliency[0])} experts; the "
                f"model has {signature.num_layers} x {signature.num_experts}."
            )
        ranking = {f"layer_{i}": ids for i, ids in enumerate(report.ranking())}
        plan = plan_from_ranking(
            ranking,
            n_experts,
            signature,
            base_model=str(model_dir),
            domain=domain,
            criterion="llmcompressor-saliency",
            source=str(path),
        )
    plan.extra["calibration"] = file_calibration(path)
    return plan
