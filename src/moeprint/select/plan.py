"""Prune plans: which experts every layer keeps, built from a ranking and validated before any weight is read
(which builder a request needs: `moeprint.select.sources.build_plan`).

A ranking is the published `{"layer_0": [expert ids best first], ...}` format, either from a run's
fingerprints (`RUN/fingerprints/rankings/<criterion>/<domain>.json`) or a published
`topical_analytics/<domain>.json`. A plan keeps the first N ids of every layer, ascending; with group-limited
routing (`adapters.base.ExpertGroups`) the first N / n_group ids of every expert group.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moeprint.adapters import ADAPTERS, adapter_for, load_config_dict
from moeprint.adapters.base import ExpertGroups
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_json, json_exists, read_json
from moeprint.io.manifest import RunManifest
from moeprint.io.names import check_domain, check_label
from moeprint.io.run import open_run
from moeprint.types import BASE_NUM_EXPERTS, ModelSignature, PrunePlan

PLAN_KEYS = ("base_model", "architecture", "domain", "criterion", "n_experts", "top_k", "kept")


def model_signature(config: dict[str, Any]) -> ModelSignature:
    """What a plan must agree with: architecture and the routing geometry of the base model."""
    adapter = adapter_for(config)
    archs = config.get("architectures")
    groups = adapter.expert_groups(config)
    return ModelSignature(
        # a text config loaded from a multimodal folder names no architecture: the family's (hub) class
        architecture=archs[0] if archs else adapter.architectures[0],
        num_layers=adapter.num_layers(config),
        num_experts=adapter.num_experts(config),
        top_k=adapter.top_k(config),
        # group-limited routing: plans keep the same number of experts in every group
        expert_groups=(groups.n_group, groups.topk_group) if groups is not None else None,
    )


def _groups(signature: ModelSignature) -> ExpertGroups | None:
    if not signature.expert_groups:
        return None
    n_group, topk_group = signature.expert_groups
    return ExpertGroups(int(n_group), int(topk_group), int(signature.num_experts))


def validate_plan(plan: PrunePlan, signature: ModelSignature) -> PrunePlan:
    """Check a plan against a model's signature (architecture, layers, experts, top-k); return it unchanged."""
    where = f"plan for {plan.domain!r} ({plan.n_experts} experts)"
    same_family = ADAPTERS.get(plan.architecture, plan) is ADAPTERS.get(signature.architecture)  # e.g. the
    if plan.architecture != signature.architecture and not same_family:  # multimodal and text-only classes
        raise MoeprintError(f"{where} is for {plan.architecture}, but the model is {signature.architecture}.")
    n_layers, n_total = signature.num_layers, signature.num_experts
    recorded = plan.base_num_experts
    if recorded is not None and recorded != n_total:
        raise MoeprintError(
            f"{where} was made for a model with {recorded} experts per layer; this model has {n_total}."
        )
    if plan.top_k != signature.top_k:
        raise MoeprintError(f"{where} says top_k={plan.top_k}, but the model routes to top-{signature.top_k}.")
    if not 1 <= plan.n_experts <= n_total:
        raise MoeprintError(f"{where}: the number of experts must be between 1 and {n_total}, got {plan.n_experts}.")
    if plan.num_layers != n_layers:
        raise MoeprintError(f"{where} covers {plan.num_layers} layers, but the model has {n_layers} MoE layers.")
    groups = _groups(signature)
    if groups is not None and (error := groups.budget_error(plan.n_experts, plan.top_k)):
        raise MoeprintError(f"{where}: {error}")
    for layer, kept in enumerate(plan.kept):
        if len(kept) != plan.n_experts:
            raise MoeprintError(f"{where}: layer {layer} keeps {len(kept)} experts instead of {plan.n_experts}.")
        if len(set(kept)) != len(kept):
            raise MoeprintError(f"{where}: layer {layer} lists an expert twice.")
        if list(kept) != sorted(kept):
            raise MoeprintError(f"{where}: layer {layer}'s kept ids are not ascending.")
        if any(not 0 <= e < n_total for e in kept):
            raise MoeprintError(f"{where}: layer {layer} names an expert id outside 0..{n_total - 1}.")
        if groups is not None and (error := groups.layer_error(kept)):
            raise MoeprintError(f"{where}: layer {layer} {error}")
    return plan


def plan_from_ranking(
    ranking: dict[str, Any],
    n_experts: int,
    signature: ModelSignature,
    *,
    base_model: str,
    domain: str,
    criterion: str,
    source: str = "",
) -> PrunePlan:
    """Keep the first `n_experts` ids of every layer of a published-format ranking."""
    n_layers, n_total = signature.num_layers, signature.num_experts
    if not 1 <= n_experts <= n_total:
        raise MoeprintError(f"the number of experts must be between 1 and {n_total}, got {n_experts}.")
    groups = _groups(signature)
    if groups is not None and (error := groups.budget_error(n_experts, signature.top_k)):
        raise MoeprintError(f"cannot keep {n_experts} experts: {error}")
    if not isinstance(ranking, dict):
        raise MoeprintError(f"ranking {source} is not a JSON object of layer_<i> lists.")
    layer_keys = sorted((k for k in ranking if re.fullmatch(r"layer_\d+", k)), key=lambda k: int(k[6:]))
    if [int(k[6:]) for k in layer_keys] != list(range(n_layers)):
        raise MoeprintError(
            f"ranking {source} covers layers {[k[6:] for k in layer_keys][:6]}..., not 0..{n_layers - 1}."
        )
    kept = []
    for key in layer_keys:
        ids = ranking[key]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise MoeprintError(f"ranking {source}: {key} is not a list of integer expert ids.")
        if len(set(ids)) != len(ids) or any(not 0 <= i < n_total for i in ids):
            raise MoeprintError(f"ranking {source}: {key} repeats an id or names one outside 0..{n_total - 1}.")
        if len(ids) < n_experts:
            raise MoeprintError(f"ranking {source}: {key} ranks only {len(ids)} experts, fewer than {n_experts}.")
        chosen = ids[:n_experts] if groups is None else groups.select(ids, n_experts)
        if chosen is None:
            raise MoeprintError(
                f"ranking {source}: {key} ranks too few experts of some group to keep "
                f"{n_experts // groups.n_group} per group."
            )
        kept.append(tuple(sorted(chosen)))
    plan = PrunePlan(
        base_model=str(base_model),
        architecture=signature.architecture,
        domain=domain,
        criterion=criterion,
        n_experts=n_experts,
        top_k=signature.top_k,
        kept=tuple(kept),
        extra={"ranking_source": source},
        base_num_experts=n_total,
    )
    return validate_plan(plan, signature)


def plan_from_run(run_dir: str | Path, domain: str, n_experts: int, criterion: str | None = None) -> PrunePlan:
    """A plan from the rankings the analyze stage wrote into `RUN/fingerprints/rankings/<criterion>/<domain>.json`."""
    run = open_run(run_dir)
    manifest = run.manifest()
    geometry = [manifest.model.architecture, manifest.num_layers, manifest.num_experts, manifest.top_k]
    if None in geometry:
        raise MoeprintError(f"{run.manifest_path} lacks architecture/num_layers/num_experts/top_k.")
    groups = manifest.expert_groups
    signature = ModelSignature(*geometry, expert_groups=tuple(groups) if groups else None)
    from moeprint.analyze import fingerprints as fp

    criteria = fp.ranked_criteria(run.fingerprints_dir)
    if not fp.has_manifest(run.fingerprints_dir) or not (run.fingerprints_dir / fp.RANKINGS_DIR).is_dir():
        raise MoeprintError(f"{run.root} has no finished fingerprints; run `moeprint analyze {run.root}` first.")
    criterion = check_label(criterion or _default_criterion(run.fingerprints_dir), "criterion")
    check_domain(domain)
    if criterion not in criteria:
        raise MoeprintError(f"unknown criterion {criterion!r}; this run has: {', '.join(criteria)}.")
    path = fp.ranking_path(run.fingerprints_dir, criterion, domain)
    if not json_exists(path):
        known = ", ".join(fp.ranked_domains(run.fingerprints_dir, criterion))
        raise MoeprintError(f"unknown domain {domain!r}; rankings exist for: {known}.")
    plan = plan_from_ranking(
        fp.read_ranking_document(path),
        n_experts,
        signature,
        base_model=str(manifest.model.name),
        domain=domain,
        criterion=criterion,
        source=str(path),
    )
    plan.extra["calibration"] = run_calibration(run.root, manifest)
    return plan


def run_calibration(run_root: Path, manifest: RunManifest) -> dict[str, Any]:
    """What a card says about the data behind a run's rankings: the run's name (not its local path),
    kind and domains, its token and prompt counts, and the prompt suite's sha256."""
    domains = ",".join(manifest.domains)
    return {
        "source": f"moeprint run {Path(run_root).name} ({manifest.kind}; domains {domains or '?'})",
        "n_tokens": manifest.n_tokens,
        "n_prompts": manifest.n_prompts,
        "sha256": manifest.prompt_suite_sha256,
    }


def _default_criterion(fingerprints_dir: Path) -> str:
    from moeprint.analyze.fingerprints import ranked_criteria, read_manifest

    fp_manifest = read_manifest(fingerprints_dir)
    if isinstance(fp_manifest, dict) and isinstance(fp_manifest.get("default_criterion"), str):
        return fp_manifest["default_criterion"]

    criteria = ranked_criteria(fingerprints_dir)
    if len(criteria) == 1:
        return criteria[0]
    raise MoeprintError(
        f"this run ranks experts by several criteria ({', '.join(criteria)}); choose one with --criterion."
    )


def plan_from_ranking_file(
    path: str | Path, model_dir: str | Path, n_experts: int, domain: str | None = None, criterion: str = "published"
) -> PrunePlan:
    """A plan from any published-format ranking file (e.g. topical_analytics/law.json) for a local model."""
    path = Path(path)
    signature = model_signature(load_config_dict(model_dir))
    domain = domain or path.name.split(".json")[0]
    plan = plan_from_ranking(
        read_json(path),
        n_experts,
        signature,
        base_model=str(model_dir),
        domain=domain,
        criterion=criterion,
        source=str(path),
    )
    plan.extra["calibration"] = file_calibration(path)
    return plan


def file_calibration(path: Path) -> dict[str, Any]:
    """A ranking file carries no token counts; the card names the file and its sha256."""
    import hashlib

    return {"source": f"ranking file {Path(path).name}", "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def save_plan(plan: PrunePlan, path: str | Path) -> Path:
    return atomic_write_json(path, plan.to_json())


def plan_from_json(obj: Any, source: str = "plan") -> PrunePlan:
    if not isinstance(obj, dict) or any(k not in obj for k in PLAN_KEYS):
        raise MoeprintError(f"{source} is not a prune plan (needs {', '.join(PLAN_KEYS)}).")
    kept = obj["kept"]
    if not isinstance(kept, list) or not all(isinstance(k, list) and all(type(i) is int for i in k) for k in kept):
        raise MoeprintError(f"{source}: `kept` must be a list of integer lists, one per layer.")
    if type(obj["n_experts"]) is not int or type(obj["top_k"]) is not int:
        raise MoeprintError(f"{source}: n_experts and top_k must be integers.")
    if obj["domain"] != "":  # random selections have no domain
        check_domain(obj["domain"], source)
    check_label(obj["criterion"], "criterion", source)
    extra = dict(obj.get("extra") or {})
    base_num_experts = extra.pop(BASE_NUM_EXPERTS, None)
    if base_num_experts is not None and type(base_num_experts) is not int:
        raise MoeprintError(f"{source}: extra.{BASE_NUM_EXPERTS} must be an integer.")
    return PrunePlan(
        base_model=str(obj["base_model"]),
        architecture=str(obj["architecture"]),
        domain=str(obj["domain"]),
        criterion=str(obj["criterion"]),
        n_experts=obj["n_experts"],
        top_k=obj["top_k"],
        kept=tuple(tuple(k) for k in kept),
        extra=extra,
        base_num_experts=base_num_experts,
    )


def load_plan(path: str | Path) -> PrunePlan:
    return plan_from_json(read_json(path), source=str(path))


def old_to_new(plan: PrunePlan) -> list[dict[str, int]]:
    """Per layer, old expert id -> new expert id (the kept ids, renumbered in ascending order)."""
    return [{str(old): new for new, old in enumerate(kept)} for kept in plan.kept]
