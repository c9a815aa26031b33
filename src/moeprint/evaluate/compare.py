"""`moeprint evaluate`: one cut against its base on the same inputs, written as one result JSON
(schema in docs/evaluate.md, reader in `moeprint.evaluate.results`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.evaluate import choice, generation, text
from moeprint.evaluate.cut import (
    BaseFacts,
    Cut,
    LoadedModel,
    base_cut,
    check_checkpoint_of,
    checkpoint_cut,
    load_model,
    plan_cut,
    read_plan,
    release,
)
from moeprint.evaluate.inputs import file_sha256, load_choice_questions, load_prompts, load_texts
from moeprint.evaluate.results import EVALUATE_SCHEMA
from moeprint.io.atomic import atomic_write_json
from moeprint.io.loader import LoadSettings, check_context, context_length
from moeprint.io.run import software_versions
from moeprint.progress import Progress
from moeprint.prune.rows import rows_as_list, rows_for_plan, with_heal_record

RESULT_SCHEMA = EVALUATE_SCHEMA  # the format's reader, moeprint.evaluate.results, owns the string


@dataclass
class EvalSettings:
    max_tokens: int = 256  # window length for perplexity
    batch_tokens: int = 4096
    max_new_tokens: int = 64
    draft_tokens: int = 4
    speculative: bool = True
    samples_per_domain: int = 3
    lm_eval_limit: int | None = None


def evaluate(
    model_path: str | Path,
    *,
    plan_path: str | Path | None = None,
    checkpoint: str | Path | None = None,
    texts_path: str | Path,
    mc_path: str | Path | None = None,
    prompts_path: str | None = None,
    lm_eval_tasks: str | None = None,
    out: str | Path,
    settings: EvalSettings | None = None,
    load: LoadSettings = LoadSettings(),
    router_rows: str | Path | None = None,
) -> Path:
    """Evaluate a plan (as a router mask) or a checkpoint against `model_path`; write `out` atomically.
    A healed plan's rows (`router_rows`, or the file the plan names) replace its kept router rows.

    A checkpoint is scored after the base has been scored and released, so the two are never loaded
    together, except for the speculative-draft measurement (assisted generation runs both at once)."""
    settings = settings or EvalSettings()
    if (plan_path is None) == (checkpoint is None):
        raise MoeprintError("give exactly one of --plan and --checkpoint.")
    # Read every input before loading any model, so bad input fails fast.
    texts = load_texts(texts_path)
    questions = load_choice_questions(mc_path) if mc_path else []
    prompts = load_prompts(prompts_path) if prompts_path else []
    config = load_config_dict(model_path)
    adapter_for(config)
    check_context(settings.max_tokens, context_length(config), "--max-tokens")
    plan = read_plan(plan_path, config) if plan_path else None  # validated before any weight is read
    if router_rows is not None and plan is None:
        raise MoeprintError("--router-rows needs --plan (a checkpoint holds its own router rows).")
    healed = rows_for_plan(plan, plan_path, router_rows, config) if plan else None
    plan = with_heal_record(plan, healed) if plan else None
    if lm_eval_tasks:
        from moeprint.evaluate.harness import parse_tasks

        parse_tasks(lm_eval_tasks)

    if checkpoint:
        check_checkpoint_of(checkpoint, model_path, config)
    base = load_model(model_path, load)
    inputs = dict(texts=texts, questions=questions, prompts=prompts, lm_eval_tasks=lm_eval_tasks, settings=settings)
    if plan:
        cut = plan_cut(base, plan, name=Path(plan_path).stem, router_rows=rows_as_list(healed))
        result = evaluate_loaded(base, cut, **inputs)
    else:
        result = _evaluate_checkpoint(base, checkpoint, load, **inputs)
    result["inputs"] = {
        "texts": {"path": str(texts_path), "sha256": file_sha256(texts_path), **result["inputs"]["texts"]},
        "mc": {"path": str(mc_path), "sha256": file_sha256(mc_path), "n": len(questions)} if mc_path else None,
        "prompts": {
            "source": str(prompts_path),
            "n": len(prompts),
            "sha256": file_sha256(prompts_path) if Path(prompts_path).is_file() else None,
        }
        if prompts_path
        else None,
    }
    if plan_path:
        result["cut"]["path"] = str(plan_path)
    return atomic_write_json(out, result)


@dataclass
class BaseScores:
    """The base model's side of every measurement, computed before any cut is scored."""

    reference: text.BaseReference
    choices: list | None = None
    generations: list | None = None
    lm_eval: dict | None = None


def score_base(
    base: LoadedModel,
    *,
    texts,
    questions=(),
    prompts=(),
    lm_eval_tasks=None,
    settings: EvalSettings,
    progress: Progress,
    keep_logprobs: bool = False,
) -> BaseScores:
    """`keep_logprobs`: store every text window's base log-distribution (spilling to a temp file past
    the memory cap), so the cut's KL needs no base model."""
    tok = base.tokenizer
    base_side = base_cut(base)
    windows = text.make_windows(texts, tok, settings.max_tokens, base.model)
    if not windows:
        raise MoeprintError("the texts are too short: no text has two or more tokens.")
    task = progress.task("base: texts", len(text.batches(windows, settings.batch_tokens)))
    scores = BaseScores(
        text.build_reference(
            base_side, windows, tok.pad_token_id, settings.batch_tokens, progress=task, keep_all=keep_logprobs
        )
    )
    if questions:
        n = sum(len(q.choices) for q in questions)
        scores.choices = choice.score_choices(
            base_side, list(questions), tok, progress=progress.task("base: choices", n)
        )
    if prompts:
        scores.generations = generation.generate(
            base_side,
            list(prompts),
            tok,
            settings.max_new_tokens,
            progress=progress.task("base: generate", len(prompts)),
        )
    if lm_eval_tasks:
        from moeprint.evaluate.harness import run_lm_eval

        scores.lm_eval = run_lm_eval(base_side, tok, lm_eval_tasks, limit=settings.lm_eval_limit)
    return scores


def score_cut(
    scores: BaseScores,
    cut: Cut,
    tokenizer,
    *,
    base: LoadedModel | None,
    questions=(),
    prompts=(),
    lm_eval_tasks=None,
    settings: EvalSettings,
    progress: Progress,
) -> dict[str, Any]:
    """The result dict of one cut against `scores`. `base` (the loaded base model) is needed only for
    the speculative measurement and when the base log-distributions were not kept."""
    in_domain = cut.info.get("domain") or None
    reference = scores.reference
    task = progress.task(f"{cut.name}: texts", len(reference.groups))
    totals = text.compare_texts(reference, cut, base_model=base.model if base else None, progress=task)
    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": software_versions(),
        "base_model": base.path if base else "",
        "cut": {"name": cut.name, "kind": cut.kind, **cut.info},
        "settings": vars(settings).copy(),
        "inputs": {"texts": {"n": len({w.text_id for w in reference.windows}), "n_windows": len(reference.windows)}},
        "text": text.summarise(totals, in_domain),
        "mc": None,
        "generation": None,
        "speculative": None,
        "lm_eval": None,
    }
    if questions:
        n = sum(len(q.choices) for q in questions)
        scored_cut = choice.score_choices(
            cut, list(questions), tokenizer, progress=progress.task(f"{cut.name}: choices", n)
        )
        result["mc"] = choice.accuracy_table(scores.choices, scored_cut, in_domain)
    if prompts:
        prompts = list(prompts)
        gen_cut = generation.generate(
            cut,
            prompts,
            tokenizer,
            settings.max_new_tokens,
            progress=progress.task(f"{cut.name}: generate", len(prompts)),
        )
        result["generation"] = {
            "max_new_tokens": settings.max_new_tokens,
            "looping": {"min_span": generation.MIN_SPAN, "max_period": generation.MAX_PERIOD},
            **generation.health_table(
                scores.generations, gen_cut, in_domain, samples_per_domain=settings.samples_per_domain
            ),
        }
        if settings.speculative:
            counts = generation.speculative(
                base.model,
                cut,
                prompts,
                tokenizer,
                settings.max_new_tokens,
                settings.draft_tokens,
                progress=progress.task(f"{cut.name}: draft for base", len(prompts)),
            )
            result["speculative"] = generation.speculative_table(counts, in_domain, settings.draft_tokens)
    if lm_eval_tasks:
        from moeprint.evaluate.harness import run_lm_eval

        result["lm_eval"] = {
            "tasks": lm_eval_tasks,
            "base": scores.lm_eval,
            "cut": run_lm_eval(cut, tokenizer, lm_eval_tasks, limit=settings.lm_eval_limit),
        }
    return result


def evaluate_loaded(
    base: LoadedModel,
    cut: Cut,
    *,
    texts,
    questions=(),
    prompts=(),
    lm_eval_tasks=None,
    settings: EvalSettings | None = None,
) -> dict[str, Any]:
    """The result dict for one cut that can run beside its loaded base (a mask, or a loaded checkpoint)."""
    settings = settings or EvalSettings()
    inputs = dict(questions=questions, prompts=prompts, lm_eval_tasks=lm_eval_tasks, settings=settings)
    with Progress() as progress:
        scores = score_base(base, texts=texts, progress=progress, **inputs)
        return score_cut(scores, cut, base.tokenizer, base=base, progress=progress, **inputs)


def _evaluate_checkpoint(
    base: LoadedModel,
    checkpoint: str | Path,
    load: LoadSettings,
    *,
    texts,
    questions=(),
    prompts=(),
    lm_eval_tasks=None,
    settings: EvalSettings,
) -> dict[str, Any]:
    """Base first, released before the checkpoint loads, unless the speculative measurement needs both."""
    inputs = dict(questions=questions, prompts=prompts, lm_eval_tasks=lm_eval_tasks, settings=settings)
    both = bool(prompts) and settings.speculative
    with Progress() as progress:
        scores = score_base(base, texts=texts, progress=progress, keep_logprobs=not both, **inputs)
        facts, tokenizer, path = BaseFacts.of(base), base.tokenizer, base.path
        if not both:
            release(base)
            base = None
        cut = checkpoint_cut(facts, checkpoint, load)
        result = score_cut(scores, cut, tokenizer, base=base, progress=progress, **inputs)
    result["base_model"] = path
    return result
