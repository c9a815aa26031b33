"""`greedy-loss`: choose the kept experts with the model in the loop, by calibration loss.

A fingerprint ranking (e.g. reap-sum) only predicts which experts matter; this measures it. Starting
from every expert kept, each round visits the layers in turn and, in each layer, tries dropping each of
the bottom-M remaining experts of the starting ranking (as a router mask, which equals the pruned
model) and drops the one whose removal raises the calibration loss least. Layers shrink together, so
after round r every layer keeps E - r experts; the path passes every target size on its way down.

At each target size N the greedy set is compared with the starting ranking's own top-N and the one
with the lower calibration loss is returned, so the result is never worse than its starting ranking
on the calibration texts (by construction; held-out texts can still disagree).

Cost: one path to the smallest size costs L x (E - N_min) x min(M, remaining) masked forward passes
over the calibration token budget, plus one pass per target size for the comparison.
Calibration texts must be the domain's recorded prompts (never evaluation texts): `run_calibration_texts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from moeprint.adapters import MoEAdapter, adapter_for
from moeprint.errors import MoeprintError
from moeprint.io.identity import check_same_model
from moeprint.io.loader import LoadSettings, input_device

Kept = tuple[tuple[int, ...], ...]


def calibration_windows(
    texts: Sequence[str], tokenizer, token_budget: int = 2048, window: int = 256
) -> list[list[int]]:
    """The texts' first `token_budget` tokens cut into windows of 2..`window` tokens (texts taken in order,
    so the budget is spread as the texts come)."""
    windows: list[list[int]] = []
    used = 0
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window][: token_budget - used]
            if len(chunk) >= 2:
                windows.append(chunk)
                used += len(chunk)
            if used >= token_budget:
                return windows
    return windows


def calibration_batches(
    texts: Sequence[str], tokenizer, token_budget: int = 2048, window: int = 256, batch_tokens: int = 4096
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention) batches, right padded, of `calibration_windows`."""
    windows = calibration_windows(texts, tokenizer, token_budget, window)
    if not windows:
        raise MoeprintError("the calibration texts have no window of two or more tokens.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return window_batches(windows, pad, batch_tokens)


def window_batches(
    windows: Sequence[Sequence[int]], pad: int, batch_tokens: int = 4096
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Token windows grouped in order into right-padded (input_ids, attention) batches of <= `batch_tokens`."""
    out, group = [], []
    for w in windows:
        if group and max(map(len, group + [w])) * (len(group) + 1) > batch_tokens:
            out.append(_pad(group, pad))
            group = []
        group.append(list(w))
    out.append(_pad(group, pad))
    return out


def _pad(group: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, group))
    input_ids = torch.full((len(group), width), pad, dtype=torch.long)  # (B, S)
    attention = torch.zeros((len(group), width), dtype=torch.long)  # (B, S)
    for row, ids in enumerate(group):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
    return input_ids, attention


@torch.no_grad()
def masked_loss(
    model: torch.nn.Module, adapter: MoEAdapter, kept: Kept | None, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """Mean next-token NLL (nats) over every predicted token of `batches`, with only `kept` experts
    routable (None: the full model)."""
    total, count = 0.0, 0
    device = input_device(model)
    for input_ids, attention in batches:
        input_ids, attention = input_ids.to(device), attention.to(device)
        if kept is None:
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits  # (B, S, V)
        else:
            with adapter.router_mask(model, kept):
                logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
        valid = (attention[:, 1:] * attention[:, :-1]).bool()  # (B, S-1)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:].to(logits.device), reduction="none"
        )  # (B, S-1)
        total += float(nll[valid].double().sum())
        count += int(valid.sum())
    return total / count


@dataclass
class GreedySelection:
    kept: dict[int, Kept]  # target size -> kept experts per layer (sorted ids)
    loss: dict[int, float]  # calibration loss of the returned set
    greedy_loss: dict[int, float]  # calibration loss of the greedy path's set (before the comparison)
    initial_loss: dict[int, float]  # calibration loss of the starting ranking's top-N
    forward_passes: int = 0  # masked passes over the calibration batches
    removal_order: list[list[int]] = field(default_factory=list)  # per layer, experts in the order dropped


def greedy_loss_select(
    model: torch.nn.Module,
    adapter: MoEAdapter,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    initial_ranking: Sequence[Sequence[int]],
    sizes: Sequence[int],
    candidates: int = 4,
    progress: Callable[[], None] | None = None,
    validation: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> GreedySelection:
    """Greedy layer-by-layer pruning by calibration loss, down to every size in `sizes` (see module doc).

    initial_ranking: per layer, every expert best first. candidates: M, how many of the lowest-ranked
    remaining experts are tried per layer per round. progress: called once per round.
    validation: batches disjoint from `batches`; when given, the greedy set and the ranking's top-N are
    compared on them (`loss`, `greedy_loss` and `initial_loss` are then validation losses), so a greedy path
    that only fits the calibration tokens is not chosen.
    """
    L = len(adapter.moe_blocks(model))
    E = adapter.num_experts(model.config)
    if len(initial_ranking) != L or any(sorted(r) != list(range(E)) for r in initial_ranking):
        raise MoeprintError(f"the starting ranking must list each of the {E} experts once for each of {L} layers.")
    targets = sorted({int(n) for n in sizes}, reverse=True)
    if not targets or not 1 <= targets[-1] <= targets[0] <= E:
        raise MoeprintError(f"greedy-loss sizes must be within 1..{E} experts.")
    # Group-limited routing: a round drops one expert from every group of a layer, so each size on the path
    # keeps the same number of experts per group (what a plan of such a model must keep).
    groups = adapter.expert_groups(model.config)
    if groups is not None and groups.n_group == 1:
        groups = None
    step = groups.n_group if groups is not None else 1
    top_k = adapter.top_k(model.config)
    for n in targets:
        if groups is not None and (error := groups.budget_error(n, top_k)):
            raise MoeprintError(f"greedy-loss cannot keep {n} experts: {error}")
    if candidates < 1:
        raise MoeprintError("greedy-loss needs at least one candidate per round.")
    remaining = [list(r) for r in initial_ranking]  # best first; candidates come from the tail
    removed: list[list[int]] = [[] for _ in range(L)]
    result = GreedySelection({}, {}, {}, {})

    def as_kept(sets: list[list[int]]) -> Kept:
        return tuple(tuple(sorted(s)) for s in sets)

    def loss_of(sets: list[list[int]]) -> float:
        result.forward_passes += 1
        return masked_loss(model, adapter, as_kept(sets), batches)

    current_loss = None
    for size in range(E, targets[-1] - 1, -step):
        if size < E:  # one round: every layer drops one expert (one per group under group-limited routing)
            for layer in range(L):
                # With groups, every trial mask must stay balanced: the groups not yet decided this round drop
                # their lowest-ranked remaining expert as a stand-in while one group's candidates are tried.
                pools = [
                    [e for e in remaining[layer] if groups is None or groups.group_of(e) == g] for g in range(step)
                ]
                drop = [pool[-1] for pool in pools]  # per group: decided, or the stand-in
                for group, pool in enumerate(pools):
                    best = None
                    for expert in pool[-candidates:]:
                        gone = set(drop[:group] + [expert] + drop[group + 1 :])
                        trial = [r if i != layer else [e for e in r if e not in gone] for i, r in enumerate(remaining)]
                        trial_loss = loss_of(trial)
                        if best is None or trial_loss < best[0]:
                            best = (trial_loss, expert)
                    current_loss, drop[group] = best
                for expert in drop:
                    remaining[layer].remove(expert)
                    removed[layer].append(expert)
            if progress:
                progress()
        if size in targets:
            top_n = [list(r[:size]) if groups is None else groups.select(r, size) for r in initial_ranking]
            if validation is not None:
                result.forward_passes += 2
                greedy = masked_loss(model, adapter, as_kept(remaining), validation)
                initial = masked_loss(model, adapter, as_kept(top_n), validation)
            else:
                greedy = current_loss if current_loss is not None else loss_of(remaining)
                initial = greedy if as_kept(top_n) == as_kept(remaining) else loss_of(top_n)
            result.greedy_loss[size], result.initial_loss[size] = greedy, initial
            chosen = remaining if greedy <= initial else top_n
            result.kept[size] = as_kept(chosen)
            result.loss[size] = min(greedy, initial)
    result.removal_order = removed
    return result


def run_calibration_texts(run_dir, domain: str) -> list[str]:
    """The texts the model saw while recording `domain` (prompts.parquet `rendered`): the calibration
    side, which a sweep has already checked is disjoint from its evaluation texts."""
    import pyarrow.parquet as pq

    from moeprint.io.run import open_run

    run = open_run(run_dir)
    table = pq.read_table(run.prompts_path, columns=["domain", "rendered"]).to_pylist()
    texts = [r["rendered"] for r in table if (domain == "all" or r["domain"] == domain) and r["rendered"]]
    if not texts:
        raise MoeprintError(f"{run.root} has no recorded prompts of domain {domain!r}.")
    return texts


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
    from moeprint.adapters import load_config_dict
    from moeprint.evaluate.cut import load_model
    from moeprint.io.run import open_run
    from moeprint.select.plan import model_signature, validate_plan
    from moeprint.select.rankings import load_ranking
    from moeprint.types import PrunePlan

    run = open_run(run_dir)
    model_path = model_path or run.manifest().get("model")
    if not model_path:
        raise MoeprintError(f"{run.root}/manifest.json names no model; pass the model.")
    signature = model_signature(load_config_dict(model_path))
    check_same_model(run.manifest().get("model_sha256"), model_path, f"run {run.root}")
    ranking, source = load_ranking(run, start, domain)  # bad criterion or domain fails before weights load
    config = load_config_dict(model_path)
    groups = adapter_for(config).expert_groups(config)
    if groups is not None and groups.n_group > 1 and (error := groups.budget_error(n_experts, signature["top_k"])):
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
        signature["architecture"],
        domain,
        "greedy-loss",
        n_experts,
        base.top_k,
        sel.kept[n_experts],
        extra={
            "base_num_experts": E,
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
