"""Recording: batched generation with router hooks, one trace row per token the model routed.

For each batch (prompts sorted by token length, so batches need little padding):
  1. left-pad the prompts; `generate` runs prefill (hook rows b*S + s) and one call per decode step (rows b);
  2. one extra forward of the last generated column through the generation cache, so the final token
     (EOS or the cap's last token), which `generate` never feeds back, is routed too: every generated
     token has a trace row and `n_generated_tokens` counts exactly those rows;
  3. the captured calls become a (B, S+G, L, k) grid, moved to the host once; padding columns and the
     pad tokens after a sequence's EOS are dropped; rows go to traces/part-<batch>.parquet.
Batch b's composition and seed depend only on the prompt suite, --batch-size and --seed, so a resumed
run, a sharded run (--shard I/N takes batches b with b % N == I) and an uninterrupted run write the same parts.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.io.atomic import make_output_dir
from moeprint.io.identity import shard_digests
from moeprint.io.loader import LoadSettings, check_context, context_length, input_device, load_causal_lm, load_tokenizer
from moeprint.io.manifest import ModelIdentity, RecordingInputs, RunManifest
from moeprint.io.outputs import OutputLock
from moeprint.io.run import RunDir, software_versions, write_prompts_table, write_trace_part
from moeprint.progress import bar
from moeprint.prompts import TemplateInputs, render_prompt, rendered_sha256
from moeprint.record import store
from moeprint.record.hooks import RouterHooks
from moeprint.record.options import RecordSettings, Shard, check_settings
from moeprint.record.segments import ChannelSegmenter
from moeprint.types import PromptRecord, RouterCapture

DELAY_ENV = "MOEPRINT_RECORD_BATCH_DELAY"  # seconds to sleep after each batch (tests kill a run mid-way)


@dataclass
class _Prepared:
    prompt: PromptRecord
    rendered: str
    token_ids: list[int]


def record(
    model_dir: str | Path,
    prompts: Sequence[PromptRecord],
    out_dir: str | Path,
    settings: RecordSettings = RecordSettings(),
    *,
    shard: str | Shard | tuple[int, int] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Record routing of `prompts` on the model in `model_dir` into the run directory `out_dir`.

    Resumes an unfinished run with the same settings; refuses a complete run. Returns the run path."""
    shard = check_settings(settings.batch_size, settings.max_new_tokens, shard)
    load = LoadSettings(device, settings.dtype)  # checks both before anything is loaded
    prompts, config, _ = check_inputs(model_dir, prompts)
    run = check_run_dir(out_dir)
    lock = OutputLock(run.root).acquire()  # held until the run is complete: a second writer fails now
    try:
        tokenizer = load_tokenizer(model_dir)
        prepared = prepare_prompts(tokenizer, prompts, settings, config)  # before the weights load
        state = recording_state(model_dir, prompts, settings, shard, prepared)
        check_rendering(run, state)
        recorder = Recorder(model_dir, prompts, settings, load.device, prepared, tokenizer)
        mine = [b for b in range(len(recorder.batches)) if shard is None or shard.owns(b)]
        make_output_dir(run.root)  # the first write: every check above has passed
        store.check_or_write_state(run, state)

        delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        with recorder.hooks, bar("recording batches", len(mine), progress) as advance:
            for b in mine:
                if store.read_batch_done(run, b) is None:
                    recorder.record_batch(run, b)
                    if delay:
                        time.sleep(delay)
                advance()
        finish_run(run, model_dir, state, config, recorder.hooks.layers, mine)
    finally:
        lock.release()
    return run.root


# ---- the pieces, shared with the Ray fan-out (record/distributed.py) ------------------------------


def check_inputs(model_dir: str | Path, prompts: Sequence[PromptRecord]) -> tuple[list[PromptRecord], dict, Any]:
    """Prompts, model config and adapter, checked before anything is loaded or written."""
    prompts = list(prompts)
    if not prompts:
        raise MoeprintError("no prompts to record.")
    if len({p.prompt_id for p in prompts}) != len(prompts):
        raise MoeprintError("prompt ids must be unique.")
    model_dir = Path(model_dir)
    config = load_config_dict(model_dir)
    adapter = adapter_for(config)
    if not list(model_dir.glob("*.safetensors")):
        raise MoeprintError(f"{model_dir} has no .safetensors weights (moeprint reads safetensors only).")
    return prompts, config, adapter


def check_run_dir(out_dir: str | Path) -> RunDir:
    """The run directory to write: new, or an unfinished recording (never a complete run or foreign files)."""
    run = RunDir(Path(out_dir))
    if run.is_complete():
        raise MoeprintError(f"{run.root} is already a complete run; choose another --out.")
    state_file = store.state_path(run)
    if run.root.exists() and not run.root.is_dir():
        raise MoeprintError(f"{run.root} is a file; --out must be a run directory.")
    if run.root.exists() and any(run.root.iterdir()) and not state_file.exists():
        raise MoeprintError(f"{run.root} exists and is not an unfinished recording; choose another --out.")
    _check_writable(run.root)
    return run


def prepare_prompts(
    tokenizer, prompts: Sequence[PromptRecord], settings: RecordSettings, config: dict
) -> list[_Prepared]:
    """Every prompt rendered with the run's fixed template inputs and tokenised, each checked against the
    model's context (one clear error before any weight loads)."""
    prepared = [_prepare(tokenizer, p, settings.reasoning_effort, settings.template) for p in prompts]
    limit = context_length(config)
    for p in prepared:
        check_context(
            len(p.token_ids) + settings.max_new_tokens,
            limit,
            f"prompt {p.prompt.prompt_id!r} ({len(p.token_ids)} tokens) plus --max-new-tokens "
            f"{settings.max_new_tokens}",
        )
    return prepared


def recording_state(
    model_dir: str | Path,
    prompts: Sequence[PromptRecord],
    settings: RecordSettings,
    shard: Shard | None,
    prepared: Sequence[_Prepared],
) -> store.RecordingState:
    """The settings a resume must match (RUN/.record/state.json)."""
    model_dir = Path(model_dir)
    return store.RecordingState(
        model=str(model_dir.resolve()),
        model_sha256=store.model_fingerprint(model_dir),
        prompt_suite_sha256=store.suite_sha256(prompts),
        generation=settings.generation(),
        has_logits=settings.logits,
        has_norms=settings.expert_norms,
        shard=str(shard) if shard else None,
        template_inputs=settings.template,
        rendered_sha256=rendered_sha256(p.rendered for p in prepared),
    )


def n_batches(n_prompts: int, batch_size: int) -> int:
    return -(-n_prompts // batch_size)


class Recorder:
    """A loaded model with its router capture, ready to record any batch of the prompt suite.
    One per process: `record` keeps one, and so does each Ray worker."""

    def __init__(
        self,
        model_dir: str | Path,
        prompts: Sequence[PromptRecord],
        settings: RecordSettings,
        device: str = "auto",
        prepared: Sequence[_Prepared] | None = None,
        tokenizer=None,
    ):
        model_dir = Path(model_dir)
        config = load_config_dict(model_dir)
        self.settings = settings
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
        self.prepared = (
            list(prepared) if prepared is not None else prepare_prompts(self.tokenizer, prompts, settings, config)
        )
        self.model = load_causal_lm(model_dir, LoadSettings(device, settings.dtype))
        # Sorting by length keeps padding small; ties broken by id so the order never depends on input order.
        order = sorted(range(len(prompts)), key=lambda i: (len(self.prepared[i].token_ids), prompts[i].prompt_id))
        self.batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        self.hooks = RouterHooks(
            self.model, adapter_for(config), logits=settings.logits, expert_norms=settings.expert_norms
        )
        self.segmenter = ChannelSegmenter(self.tokenizer)
        self.pad_id, self.eos_ids = _special_ids(self.tokenizer, self.model)

    def record_batch(self, run: RunDir, b: int) -> list[dict[str, Any]]:
        """Record batch `b` into `run` (its trace part, then its done marker); returns its prompt rows.
        Call with the hooks attached. The same batch always writes the same bytes."""
        batch = [self.prepared[i] for i in self.batches[b]]
        torch.manual_seed(self.settings.seed * 1_000_003 + b)  # per-batch seed: same in resumed and sharded runs
        table, rows = _record_batch(self, batch)
        write_trace_part(run, b, table)
        store.write_batch_done(run, b, rows)
        return rows


def finish_run(
    run: RunDir,
    model_dir: str | Path,
    state: store.RecordingState,
    config: dict,
    layers: list[int],
    batches: Sequence[int],
) -> Path:
    """prompts.parquet, then manifest.json (last), of a run whose `batches` are all done."""
    adapter = adapter_for(config)
    prompt_rows: list[dict[str, Any]] = []
    for b in batches:
        rows = store.read_batch_done(run, b)
        if rows is None:
            raise MoeprintError(f"{run.root}: batch {b} is not recorded yet.")
        prompt_rows.extend(rows)
    write_prompts_table(run, prompt_rows)
    groups = adapter.expert_groups(
        config
    )  # group-limited routing (`MoEAdapter.expert_groups`): plans keep a budget per group
    manifest = RunManifest(
        kind="recorded",
        model=ModelIdentity(
            name=str(model_dir),
            sha256=state.model_sha256,
            architecture=config["architectures"][0],
            weights=shard_digests(model_dir),
        ),
        num_layers=len(layers),
        num_experts=adapter.num_experts(config),
        top_k=adapter.top_k(config),
        moe_layers=tuple(layers),
        expert_groups=(groups.n_group, groups.topk_group) if groups else None,
        domains=tuple(sorted({r["domain"] for r in prompt_rows})),
        n_prompts=len(prompt_rows),
        n_tokens=sum(r["n_prompt_tokens"] + r["n_generated_tokens"] for r in prompt_rows),
        has_logits=state.has_logits,
        has_norms=state.has_norms,
        has_token_ids=True,
        prompt_suite_sha256=state.prompt_suite_sha256,
        recording=RecordingInputs(state.template_inputs, state.rendered_sha256, state.shard),
        generation=state.generation,
        versions=software_versions(),
    )
    run.write_manifest(manifest)
    return run.root


# ---- one batch ----------------------------------------------------------------------------------


@torch.no_grad()
def _record_batch(recorder: Recorder, batch: Sequence[_Prepared]) -> tuple[Any, list[dict[str, Any]]]:
    """One batch's trace table and prompt rows (module doc, steps 1-3)."""
    model, settings, pad_id, eos_ids = recorder.model, recorder.settings, recorder.pad_id, recorder.eos_ids
    device = input_device(model)
    B, S = len(batch), max(len(p.token_ids) for p in batch)
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    for b, p in enumerate(batch):  # left padding: real tokens end at column S-1
        input_ids[b, S - len(p.token_ids) :] = torch.tensor(p.token_ids)
        mask[b, S - len(p.token_ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)

    recorder.hooks.reset()
    if (
        settings.max_new_tokens == 0
    ):  # prefill only: one forward over the prompts, positions as generate would give them
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, S)
        model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1)
        sequences, G = input_ids, 0
    else:
        sequences, G = _generate(model, input_ids, mask, settings.max_new_tokens, settings.do_sample, pad_id, eos_ids)
    grids = _grids(recorder.hooks.take(), B, S, G)  # trace column -> (B, S+G, L, width), on host

    generated = sequences[:, S:].cpu().numpy()  # (B, G)
    columns: dict[str, list[np.ndarray]] = {
        name: [] for name in ("prompt_id", "domain", "position", "token_id", "is_generated", "segment", *grids)
    }
    rows = []
    for b, p in enumerate(batch):
        gen = generated[b]
        eos_at = np.flatnonzero(np.isin(gen, eos_ids))
        n_gen = int(eos_at[0]) + 1 if eos_at.size else G
        n_prompt = len(p.token_ids)
        keep = np.r_[np.arange(S - n_prompt, S), np.arange(S, S + n_gen)]  # real columns of row b
        n = keep.size
        gen_ids = gen[:n_gen].tolist()
        columns["prompt_id"].append(np.array([p.prompt.prompt_id] * n, dtype=object))
        columns["domain"].append(np.array([p.prompt.domain] * n, dtype=object))
        columns["position"].append(np.arange(n, dtype=np.int32))
        columns["token_id"].append(np.r_[np.array(p.token_ids, dtype=np.int64), gen[:n_gen]].astype(np.int32))
        columns["is_generated"].append(np.r_[np.zeros(n_prompt, bool), np.ones(n_gen, bool)])
        columns["segment"].append(np.array(["prompt"] * n_prompt + recorder.segmenter.segments(gen_ids), dtype=object))
        for name, grid in grids.items():
            columns[name].append(grid[b, keep].reshape(n, -1))  # (n, L*width), layer-major
        rows.append(
            {
                **store.prompt_row(p.prompt),
                "rendered": p.rendered,
                "completion": recorder.tokenizer.decode(gen_ids, skip_special_tokens=False),
                "finished": bool(eos_at.size),
                "n_prompt_tokens": n_prompt,
                "n_generated_tokens": n_gen,
            }
        )
    flat = {name: np.concatenate(parts) for name, parts in columns.items()}
    return store.trace_table(flat, settings.logits, settings.expert_norms), rows


def _generate(model, input_ids, mask, max_new_tokens, do_sample, pad_id, eos_ids):
    """generate, then the last generated column fed once more so that its routing exists too."""
    B, S = input_ids.shape
    out = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        return_dict_in_generate=True,
    )
    sequences = out.sequences  # (B, S+G)
    G = sequences.shape[1] - S
    # Feed the last generated column once so its routing exists (generate never feeds it back).
    full_mask = torch.cat([mask, torch.ones((B, G), dtype=mask.dtype, device=mask.device)], dim=1)  # (B, S+G)
    model(
        input_ids=sequences[:, -1:],
        attention_mask=full_mask,
        position_ids=full_mask.sum(-1, keepdim=True) - 1,  # same positions generate would use next
        **{_cache_keyword(model): out.cache if "cache" in out else out.past_key_values},
        use_cache=True,
        logits_to_keep=1,
    )
    return sequences, G


def _grids(calls: list[list[RouterCapture]], B: int, S: int, G: int) -> dict[str, np.ndarray]:
    """Per-layer captures -> trace column -> (B, S+G, L, width) host arrays. Call 0 is the prefill
    (B*S rows, row b*S+s), calls 1..G are one row per sequence (G-1 decode steps + the final forward);
    with G = 0 (prefill only) the prefill is the only call."""
    per_column: dict[str, list[torch.Tensor]] = {}
    for layer_calls in calls:
        if len(layer_calls) != G + 1 or layer_calls[0].ids.shape[0] != B * S:
            sizes = [c.ids.shape[0] for c in layer_calls]
            raise MoeprintError(
                f"unexpected router calls during generation (row counts {sizes[:4]}..., expected {B * S} then {B} x {G}); "
                "this model's generate path is not supported for recording."
            )
        columns = [c.columns() for c in layer_calls]
        for name, first in columns[0].items():
            prefill = first.reshape(B, S, -1)  # (B, S, w)
            if G == 0:  # prefill only (--max-new-tokens 0)
                per_column.setdefault(name, []).append(prefill)
                continue
            steps = torch.stack([c[name].reshape(B, -1) for c in columns[1:]], dim=1)  # (B, G, w)
            per_column.setdefault(name, []).append(torch.cat([prefill, steps], dim=1))  # (B, S+G, w)
    out = {}
    for name, layers in per_column.items():
        grid = torch.stack(layers, dim=2)  # (B, S+G, L, w)
        grid = grid.to(torch.int16) if name == "ids" else grid.to(torch.float32)
        out[name] = grid.cpu().numpy()  # the one device->host copy of the batch
    return out


# ---- helpers ------------------------------------------------------------------------------------


def check_rendering(run: RunDir, state: store.RecordingState) -> None:
    """An unfinished run resumes only if its prompts render to the same text as when it started."""
    previous = store.read_started_state(run)
    if previous is None:
        return
    rendered = state.rendered_sha256
    if previous.get("rendered_sha256", rendered) != rendered:  # a state without it fails the settings check
        before, now = previous.get("template_inputs") or {}, state.template_inputs.to_json()
        hint = (
            f"it was started with --date {before['date']}, now {now['date']}"
            if before.get("date") != now["date"]
            else "the chat template or its settings changed"
        )
        raise MoeprintError(
            f"{run.root} holds an unfinished recording whose prompts rendered to other "
            f"text ({hint}); rerun with the same inputs to resume, or choose another --out."
        )


def _prepare(tokenizer, prompt: PromptRecord, reasoning_effort: str | None, template: TemplateInputs) -> _Prepared:
    rendered = render_prompt(tokenizer, prompt, reasoning_effort, template)
    # Chat templates already contain every special token; raw text gets the tokenizer's own (e.g. BOS).
    ids = tokenizer(rendered, add_special_tokens=prompt.text is not None)["input_ids"]
    if not ids:
        raise MoeprintError(f"prompt {prompt.prompt_id!r} is empty after tokenization.")
    return _Prepared(prompt, rendered, list(ids))


def _special_ids(tokenizer, model) -> tuple[int, list[int]]:
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    if not eos_ids:
        raise MoeprintError("the model defines no EOS token (generation_config.eos_token_id).")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.pad_token_id
    return int(pad if pad is not None else eos_ids[0]), eos_ids


def _check_writable(path: Path) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise MoeprintError(f"cannot write the run to {path}: {probe} is not a writable directory.")


def _cache_keyword(model: torch.nn.Module) -> str:
    """transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name goes in 5.40); 5.23 has only
    the old one. Ask the model's own signature rather than a version number."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
