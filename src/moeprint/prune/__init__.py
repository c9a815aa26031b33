"""Prune stage: surgery (streams safetensors) -> model card, for plans made by moeprint.select.

Library entry points for other stages (plans themselves: moeprint.select.plan and moeprint.select.sources):
    build_checkpoint(model_dir, plan, out_dir, dtype="keep", shard_size=5e9, card=CardOptions()) -> PruneResult
    load_masked(model_dir, plan, settings=LoadSettings()) -> model with the plan applied as a router mask
    run_factory(model_dir, out_dir, sizes="4-32", run_dir=... | rankings_dir=..., domains=None) -> [FactoryRow]
"""

from moeprint.prune.card import CardOptions
from moeprint.prune.factory import FactoryRow, FactoryStatus, build_checkpoint, planned_parameters, run_factory
from moeprint.prune.mask import load_masked, masked_generate
from moeprint.prune.naming import DEFAULT_NAME_PATTERN, count_parameters, model_name
from moeprint.prune.surgery import PruneResult, prune_checkpoint

__all__ = [
    "CardOptions",
    "DEFAULT_NAME_PATTERN",
    "FactoryRow",
    "FactoryStatus",
    "PruneResult",
    "build_checkpoint",
    "count_parameters",
    "load_masked",
    "masked_generate",
    "model_name",
    "planned_parameters",
    "prune_checkpoint",
    "run_factory",
]
