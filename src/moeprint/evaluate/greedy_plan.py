"""`moeprint greedy-plan`: a run and a model in, a `greedy-loss` prune plan out.

The selection itself is `moeprint.select.greedy` (given a loaded model); this loads the model (the evaluate
stage's loader) after everything that can fail without weights has been checked: the run, the starting
ranking, the group budget and the calibration texts.
"""

from __future__ import annotations

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.evaluate.cut import load_model
from moeprint.io.identity import check_same_model
from moeprint.io.loader import LoadSettings
from moeprint.io.run import open_run
from moeprint.select.greedy import calibration_batches, greedy_loss_select, run_calibration_texts
from moeprint.select.plan import model_signature, validate_plan
from moeprint.select.rankings import load_ranking
from moeprint.types import PrunePlan


def greedy_plan(
    run_dir,
    domain: str,
    n_experts: int,
    *,
    model_path=None,
    start: str = "reap-sum",
    token_budget: int = 1024,
    candidates: int = 3,
    progress=None,
    load: LoadSettings = LoadSettings(),
    validation_tokens: int = 0,
):
    """A prune plan (criterion `greedy-loss`) for `domain` at `n_experts`: greedy-loss started from the
    run's `start` ranking, scored on the domain's recorded prompts. Returns (plan, selection).
    progress: a moeprint.progress.Progress (one step per round), or None.
    validation_tokens: when > 0, the prompts are split by position (even: search, odd: validation) and the
    greedy set and the ranking's top-N are compared on this many tokens of the validation prompts."""
    run = open_run(run_dir)
    model_path = model_path or run.manifest().model.name
    if not model_path:
        raise MoeprintError(f"{run.root}/manifest.json names no model; pass the model.")
    signature = model_signature(load_config_dict(model_path))
    check_same_model(run.manifest().model.sha256, model_path, f"run {run.root}")
    ranking, source = load_ranking(run, start, domain)  # bad criterion or domain fails before weights load
    config = load_config_dict(model_path)
    groups = adapter_for(config).expert_groups(config)
    if groups is not None and groups.n_group > 1 and (error := groups.budget_error(n_experts, signature.top_k)):
        raise MoeprintError(f"greedy-loss cannot keep {n_experts} experts: {error}")
    prompts = run_calibration_texts(run.root, domain)
    if validation_tokens < 0:
        raise MoeprintError("--validation-tokens must be >= 0.")
    held: list[str] = []
    if validation_tokens:
        if len(prompts) < 2:
            raise MoeprintError(f"a validation split needs at least 2 recorded prompts of {domain!r}; the run has 1.")
        prompts, held = prompts[0::2], prompts[1::2]  # disjoint by prompt
    base = load_model(model_path, load)
    E = base.num_experts
    if not 1 <= n_experts <= E:
        raise MoeprintError(f"the model has {E} experts per layer; keep between 1 and {E}.")
    stride = max(1, len(prompts) // max(1, token_budget // 128))  # spread the budget over the domain's prompts
    batches = calibration_batches(prompts[::stride], base.tokenizer, token_budget)
    validation = None
    if held:
        v_stride = max(1, len(held) // max(1, validation_tokens // 128))
        validation = calibration_batches(held[::v_stride], base.tokenizer, validation_tokens)
    sel = greedy_loss_select(
        base.model,
        base.adapter,
        batches,
        [ranking[f"layer_{l}"] for l in range(base.num_layers)],
        [n_experts],
        candidates,
        progress.task("greedy-loss rounds", (E - n_experts) // _group_step(base)) if progress else None,
        validation=validation,
    )
    plan = PrunePlan(
        str(model_path),
        signature.architecture,
        domain,
        "greedy-loss",
        n_experts,
        base.top_k,
        sel.kept[n_experts],
        base_num_experts=E,
        extra={
            "start_criterion": start,
            "start_source": source,
            "calibration_tokens": token_budget,
            "candidates": candidates,
            "validation_tokens": validation_tokens,  # 0: the set was chosen on the search tokens
            "calibration_loss": sel.loss[n_experts],  # on the validation split when validation_tokens > 0
            "start_loss": sel.initial_loss[n_experts],
            "greedy_path_loss": sel.greedy_loss[n_experts],
            "forward_passes": sel.forward_passes,
        },
    )
    return validate_plan(plan, signature), sel


def _group_step(base) -> int:
    """Experts a greedy round drops per layer: one per expert group (1 without group-limited routing)."""
    groups = base.adapter.expert_groups(base.model.config)
    return groups.n_group if groups is not None else 1
