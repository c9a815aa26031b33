"""Prune stage: plans (validated before any weight is read) -> surgery (streams safetensors) -> model card.

Library entry points for other stages:
    plan_from_run(run_dir, domain, n_experts, criterion=None) -> PrunePlan
    plan_from_ranking_file(path, model_dir, n_experts, domain=None, criterion="published") -> PrunePlan
    plan_from_ranking(ranking, n_experts, signature, base_model=, domain=, criterion=) -> PrunePlan
    load_plan(path) / save_plan(plan, path) / validate_plan(plan, model_signature(config))
    build_checkpoint(model_dir, plan, out_dir, dtype="keep", shard_size=5e9, card=CardOptions()) -> PruneResult
    load_masked(model_dir, plan, settings=LoadSettings()) -> model with the plan applied as a router mask
    run_factory(model_dir, out_dir, sizes=[...], run_dir=... | rankings_dir=..., domains=None) -> [FactoryRow]
"""

from moeprint.prune.card import CardOptions
from moeprint.prune.factory import FactoryRow, build_checkpoint, parse_sizes, planned_parameters, run_factory
from moeprint.prune.mask import load_masked, masked_generate
from moeprint.prune.naming import DEFAULT_NAME_PATTERN, count_parameters, model_name
from moeprint.prune.surgery import PruneResult, prune_checkpoint
from moeprint.select.plan import (
    load_plan,
    model_signature,
    old_to_new,
    plan_from_ranking,
    plan_from_ranking_file,
    plan_from_run,
    save_plan,
    validate_plan,
)

__all__ = [
    "CardOptions",
    "DEFAULT_NAME_PATTERN",
    "FactoryRow",
    "PruneResult",
    "build_checkpoint",
    "count_parameters",
    "load_masked",
    "load_plan",
    "masked_generate",
    "model_name",
    "model_signature",
    "old_to_new",
    "parse_sizes",
    "plan_from_ranking",
    "plan_from_ranking_file",
    "plan_from_run",
    "planned_parameters",
    "prune_checkpoint",
    "run_factory",
    "save_plan",
    "validate_plan",
]
