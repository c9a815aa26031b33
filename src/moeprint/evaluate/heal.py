"""Heal a cut: refit only the kept experts' router rows so that the cut imitates its base.

Dropping experts leaves a router trained to choose among experts that are gone. Healing keeps every expert
and every other weight bit-identical and refits, per MoE layer, the kept rows of the router (weight (n,H) and
bias (n)). Three objectives:

- `e2e`: minimise the mean token KL(base || cut) of next-token distributions, backpropagating through the
  frozen model; only the router rows are leaf tensors with gradients (the mask computes the router logits
  from them, so gradients reach them through the routing weights of the chosen experts).
- `local`: layer by layer, the masked MoE block's output matches the full block's output on the same input
  (relative squared error). Layers are fitted in order and each layer's inputs are captured from the cut with
  the earlier layers already healed. Only one layer's block and its inputs are in the optimiser at a time.
- `bias`: the baseline. As `e2e` but only the router biases move (a few steps of the same optimiser).

Calibration texts are cut into token windows; a seeded permutation holds back `holdout` of them. Every
`eval_every` steps the held-back metric (KL for e2e/bias, the layer's error for local) is measured; the best
rows so far are kept and fitting stops after `patience` evaluations without improvement. With the same seed,
settings and texts the result is the same tensor bytes (tested on CPU, on one machine).

The model may run in any dtype on any device: the rows and Adam's state stay float32 leaves, the mask casts
them to the router's dtype in its matmul (so what is measured is what the rounded rows do), log-probs and
errors are taken in float32, and the cached base log-probs wait on the CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from moeprint.adapters import MoEAdapter
from moeprint.adapters.base import RouterRows
from moeprint.errors import MoeprintError
from moeprint.evaluate.text import kl_base_to_cut
from moeprint.io.loader import input_device
from moeprint.select.greedy import calibration_windows, window_batches

OBJECTIVES = ("e2e", "local", "bias")
# Biases are single logit offsets, so their steps can be larger than a row's without overshooting.
DEFAULT_LR = {"e2e": 2e-3, "local": 2e-3, "bias": 1e-2}
Batch = tuple[torch.Tensor, torch.Tensor]  # input_ids (B, S), attention (B, S)


@dataclass(frozen=True)
class HealSettings:
    objective: str = "e2e"
    steps: int = 200  # most optimiser steps (per layer for `local`)
    lr: float | None = None  # Adam learning rate (None: DEFAULT_LR of the objective)
    seed: int = 0
    token_budget: int = 4096  # calibration tokens, fit and held-back parts together
    holdout: float = 0.25  # share of the calibration windows held back for early stopping
    window: int = 128  # tokens per calibration window
    batch_tokens: int = 1024  # padded tokens per optimiser step
    eval_every: int = 10
    patience: int = 3

    def validate(self) -> HealSettings:
        if self.objective not in OBJECTIVES:
            raise MoeprintError(f"unknown heal objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}.")
        if self.steps < 1 or self.eval_every < 1 or self.patience < 1:
            raise MoeprintError("heal steps, eval_every and patience must be >= 1.")
        if self.lr is not None and not self.lr > 0:
            raise MoeprintError("the heal learning rate must be > 0.")
        if not 0 < self.holdout < 1:
            raise MoeprintError("the held-back share of the calibration texts must be between 0 and 1 (exclusive).")
        if self.window < 2 or self.token_budget < 2 * self.window or self.batch_tokens < self.window:
            raise MoeprintError("heal needs window >= 2, tokens >= 2 x window and batch tokens >= window.")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.objective]


@dataclass
class HealResult:
    rows: list[RouterRows]  # per MoE layer, in ascending kept order, detached, on the CPU, in the router's dtype
    settings: HealSettings
    kl_before: float  # held-back calibration KL(base || cut), unhealed rows
    kl_after: float  # the same with the healed rows
    fit_kl_before: float  # the fitted part's KL, unhealed
    fit_kl_after: float
    steps: int  # optimiser steps taken (summed over layers for `local`)
    seconds: float
    n_fit_tokens: int
    n_holdout_tokens: int
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, held-back metric)

    def info(self) -> dict:
        """The JSON record stored with the rows (and in the healed plan)."""
        return {
            "objective": self.settings.objective,
            "settings": asdict(self.settings),
            "holdout_kl_before": self.kl_before,
            "holdout_kl_after": self.kl_after,
            "fit_kl_before": self.fit_kl_before,
            "fit_kl_after": self.fit_kl_after,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "fit_tokens": self.n_fit_tokens,
            "holdout_tokens": self.n_holdout_tokens,
        }


@dataclass
class Calibration:
    """Fit and held-back batches with the base model's next-token log-probs of each (computed once)."""

    fit: list[Batch]
    holdout: list[Batch]
    base_fit: list[torch.Tensor]  # per batch (B, S-1, V)
    base_holdout: list[torch.Tensor]

    @staticmethod
    def tokens(batches: list[Batch]) -> int:
        return sum(int(_valid(a).sum()) for _, a in batches)


def split_calibration(model: torch.nn.Module, tokenizer, texts: Sequence[str], settings: HealSettings) -> Calibration:
    """Windows of the texts (first `token_budget` tokens), a seeded permutation, the last `holdout` share held back."""
    windows = calibration_windows(texts, tokenizer, settings.token_budget, settings.window)
    if len(windows) < 2:
        raise MoeprintError(
            f"healing needs at least two calibration windows of {settings.window} tokens; "
            f"the texts give {len(windows)}."
        )
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    n_hold = min(len(windows) - 1, max(1, round(len(windows) * settings.holdout)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    fit = window_batches([windows[i] for i in order[n_hold:]], pad, settings.batch_tokens)
    hold = window_batches([windows[i] for i in order[:n_hold]], pad, settings.batch_tokens)
    # the base log-probs wait on the CPU (on a GPU they would hold tokens x vocabulary floats for the whole fit)
    return Calibration(fit, hold, [_logprobs(model, b).cpu() for b in fit], [_logprobs(model, b).cpu() for b in hold])


def heal_rows(
    model: torch.nn.Module,
    adapter: MoEAdapter,
    kept: Sequence[Sequence[int]],
    calib: Calibration,
    settings: HealSettings,
    progress: Callable[..., None] | None = None,
) -> HealResult:
    """Fit the kept router rows of `model` (unchanged on return) for the plan `kept` (see module doc)."""
    settings.validate()
    if any(adapter.is_fused(block) for _, block in adapter.moe_blocks(model)):
        # the mask writes fused blocks' rows into the router in place (docs/prune.md): no gradient reaches them
        raise MoeprintError(
            "healing needs MoE blocks that call their router module; this model's are fused (quantised GPU "
            "kernels). Heal where transformers dequantises the experts (e.g. --device cpu)."
        )
    kept = [sorted(k) for k in kept]
    started = time.perf_counter()
    initial = initial_rows(model, adapter, kept)
    with _frozen(model):
        fit_before, hold_before = (
            mean_kl(model, adapter, kept, initial, calib.fit, calib.base_fit),
            mean_kl(model, adapter, kept, initial, calib.holdout, calib.base_holdout),
        )
        if settings.objective == "local":
            rows, steps, history = _fit_local(model, adapter, kept, initial, calib, settings, progress)
        else:
            rows, steps, history = _fit_e2e(
                model, adapter, kept, initial, calib, settings, progress, weights=settings.objective == "e2e"
            )
        fit_after, hold_after = (
            mean_kl(model, adapter, kept, rows, calib.fit, calib.base_fit),
            mean_kl(model, adapter, kept, rows, calib.holdout, calib.base_holdout),
        )
    like = [adapter.router(b).weight for _, b in adapter.moe_blocks(model)]
    rows = [
        RouterRows(
            r.weight.detach().to("cpu", w.dtype).contiguous(),
            None if r.bias is None else r.bias.detach().to("cpu", w.dtype).contiguous(),
        )
        for r, w in zip(rows, like)
    ]
    return HealResult(
        rows,
        settings,
        hold_before,
        hold_after,
        fit_before,
        fit_after,
        steps,
        time.perf_counter() - started,
        Calibration.tokens(calib.fit),
        Calibration.tokens(calib.holdout),
        history,
    )


def initial_rows(model: torch.nn.Module, adapter: MoEAdapter, kept: Sequence[Sequence[int]]) -> list[RouterRows]:
    """The unhealed cut's rows: the base router's kept rows, in float32 (the optimiser's precision)."""
    out = []
    for (_, block), keep in zip(adapter.moe_blocks(model), kept):
        router = adapter.router(block)
        r = RouterRows.gather(router, torch.tensor(list(keep), dtype=torch.long, device=router.weight.device))
        out.append(RouterRows(r.weight.float(), None if r.bias is None else r.bias.float()))
    return out


@torch.no_grad()
def mean_kl(
    model: torch.nn.Module,
    adapter: MoEAdapter,
    kept,
    rows: Sequence[RouterRows] | None,
    batches: list[Batch],
    base: list[torch.Tensor],
) -> float:
    """Mean token KL(base || cut) over `batches` with the cut routed from `rows` (None: the base kept rows)."""
    total, count = 0.0, 0
    with adapter.router_mask(model, kept, _detached(rows)):
        for batch, base_lp in zip(batches, base):
            cut_lp = _logprobs(model, batch)  # (B, S-1, V)
            kl = kl_base_to_cut(base_lp.to(cut_lp.device), cut_lp)  # (B, S-1)
            valid = _valid(batch[1]).to(kl.device)
            total += float(kl[valid].double().sum())
            count += int(valid.sum())
    return total / max(count, 1)


# ---- end to end (and bias only) -----------------------------------------------------------------


def _fit_e2e(
    model, adapter, kept, initial: list[RouterRows], calib: Calibration, settings: HealSettings, progress, weights: bool
) -> tuple[list[RouterRows], int, list[tuple[int, float]]]:
    rows = [
        RouterRows(
            r.weight.clone().requires_grad_(weights), None if r.bias is None else r.bias.clone().requires_grad_(True)
        )
        for r in initial
    ]
    params = [t for r in rows for t in (r.weight, r.bias) if t is not None and t.requires_grad]
    if not params:
        raise MoeprintError("bias-only healing needs a router with a bias.")
    gen = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []  # batch indices, one seeded permutation per pass over the fit batches

    def step_loss(step: int) -> torch.Tensor:
        if step >= len(order):
            order.extend(torch.randperm(len(calib.fit), generator=gen).tolist())
        batch, base_lp = calib.fit[order[step]], calib.base_fit[order[step]]
        with torch.enable_grad(), adapter.router_mask(model, kept, rows):
            cut_lp = _logprobs(model, batch, grad=True)  # (B, S-1, V)
            return kl_base_to_cut(base_lp.to(cut_lp.device), cut_lp)[_valid(batch[1]).to(cut_lp.device)].mean()

    return _descend(
        step_loss,
        params,
        lambda: mean_kl(model, adapter, kept, rows, calib.holdout, calib.base_holdout),
        lambda: _detached(rows),
        settings,
        progress,
    )


def _descend(
    step_loss: Callable[[int], torch.Tensor],
    params: list[torch.Tensor],
    heldout: Callable[[], float],
    snapshot: Callable[[], object],
    settings: HealSettings,
    progress,
    offset: int = 0,
):
    """Adam on `params`, at most `settings.steps` steps of `step_loss(step)`. The held-back metric is measured
    at the start, every `eval_every` steps and at the last step; returns (snapshot of the best, steps taken,
    history). Stops after `patience` measurements without improvement."""
    opt = torch.optim.Adam(params, lr=settings.learning_rate)
    best = (heldout(), snapshot())
    history, bad, step = [(offset, best[0])], 0, 0
    while step < settings.steps and bad < settings.patience:
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if progress:
            progress()
        if step % settings.eval_every == 0 or step == settings.steps:
            metric = heldout()
            history.append((offset + step, metric))
            best, bad = ((metric, snapshot()), 0) if metric < best[0] else (best, bad + 1)
    return best[1], step, history


# ---- layer-local -------------------------------------------------------------------------------


class _Captured(Exception):
    """Raised by the capture hook: nothing after the captured layer needs computing."""


def _block_inputs(model, adapter, kept, rows: list[RouterRows], layer: int, batches: list[Batch]) -> torch.Tensor:
    """The real tokens' inputs of MoE block `layer` (T, H) under the cut routed from `rows`."""
    block = adapter.moe_blocks(model)[layer][1]
    out: list[torch.Tensor] = []

    def hook(module, args):
        out.append(args[0].detach())
        raise _Captured

    handle = block.register_forward_pre_hook(hook)
    try:
        with torch.no_grad(), adapter.router_mask(model, kept, _detached(rows)):
            device = input_device(model)
            for ids, attention in batches:
                with contextlib.suppress(_Captured):
                    model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False)
                hidden = out.pop()  # (B, S, H)
                out.append(hidden[attention.to(hidden.device).bool()])  # (T_b, H): padding is routed too; drop it
    finally:
        handle.remove()
    return torch.cat(out)  # (T, H)


def _block_out(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = block(x.unsqueeze(0))  # (1, T, H)
    return (out[0] if isinstance(out, tuple) else out).squeeze(0)  # (T, H)


def _fit_local(
    model, adapter, kept, initial: list[RouterRows], calib: Calibration, settings: HealSettings, progress
) -> tuple[list[RouterRows], int, list[tuple[int, float]]]:
    blocks = adapter.moe_blocks(model)
    E = adapter.num_experts(model.config)
    gen = torch.Generator().manual_seed(settings.seed)
    rows = list(initial)
    history: list[tuple[int, float]] = []
    total = 0
    for layer, (_, block) in enumerate(blocks):
        x_fit = _block_inputs(model, adapter, kept, rows, layer, calib.fit)  # (T, H)
        x_hold = _block_inputs(model, adapter, kept, rows, layer, calib.holdout)  # (T', H)
        with torch.no_grad():
            y_fit, y_hold = _block_out(block, x_fit), _block_out(block, x_hold)  # full experts: (T, H), (T', H)
        only = [list(range(E)) if i != layer else kept[layer] for i in range(len(blocks))]
        r0 = rows[layer]
        leaf = RouterRows(
            r0.weight.clone().requires_grad_(True), None if r0.bias is None else r0.bias.clone().requires_grad_(True)
        )
        layer_rows = [leaf if i == layer else None for i in range(len(blocks))]

        def error(x, y, grad=False):
            with torch.set_grad_enabled(grad), adapter.router_mask(model, only, layer_rows):
                y = y.float()  # the error in float32 whatever the model's dtype
                return (_block_out(block, x).float() - y).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12)

        def step_loss(step: int) -> torch.Tensor:
            pick = torch.randperm(x_fit.shape[0], generator=gen)[: settings.batch_tokens]  # (b,) tokens of this step
            pick = pick.to(x_fit.device)
            return error(x_fit[pick], y_fit[pick], grad=True)

        best, steps, layer_history = _descend(
            step_loss,
            [t for t in (leaf.weight, leaf.bias) if t is not None],
            lambda: float(error(x_hold, y_hold)),
            lambda: _detached([leaf])[0],
            settings,
            progress,
            offset=total,
        )
        history += layer_history
        rows[layer] = best  # later layers are captured from the cut with this layer healed
        total += steps
        x_fit = x_hold = y_fit = y_hold = None  # release this layer's captures before the next layer's
    return rows, total, history


# ---- helpers -----------------------------------------------------------------------------------


def _logprobs(model: torch.nn.Module, batch: Batch, grad: bool = False) -> torch.Tensor:
    """Next-token log-probs in float32 (whatever the model's dtype), on the model's output device."""
    device = input_device(model)
    ids, attention = batch
    with torch.set_grad_enabled(grad):
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
        return torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, S-1, V)


def _valid(attention: torch.Tensor) -> torch.Tensor:
    return (attention[:, 1:] * attention[:, :-1]).bool()  # (B, S-1)


def _detached(rows: Sequence[RouterRows | None] | None) -> list[RouterRows | None] | None:
    if rows is None:
        return None
    return [
        None
        if r is None
        else RouterRows(r.weight.detach().clone(), None if r.bias is None else r.bias.detach().clone())
        for r in rows
    ]


@contextlib.contextmanager
def _frozen(model: torch.nn.Module):
    """No model parameter collects gradients while healing (only the router-row leaves do)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
