"""`moeprint evaluate`: one cut against its base on the same inputs, written as one result JSON
(schema in docs/evaluate.md, reader in `moeprint.evaluate.results`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.evaluate import choice, generation, text
from moeprint.adapters import adapter_for, load_config_dict
from moeprint.evaluate.cut import (Cut, LoadedModel, base_cut, check_checkpoint_of, checkpoint_cut, load_model,
                                   plan_cut, read_plan)
from moeprint.evaluate.inputs import file_sha256, load_choice_questions, load_prompts, load_texts
from moeprint.evaluate.progress import Progress
from moeprint.io import atomic_write_json
from moeprint.prune.rows import rows_as_list, rows_for_plan, with_heal_record
from moeprint.run import software_versions

RESULT_SCHEMA = "moeprint.evaluate/1"


@dataclass
class EvalSettings:
    max_tokens: int = 256  # window length for perplexity
    batch_tokens: int = 4096
    max_new_tokens: int = 64
    draft_tokens: int = 4
    speculative: bool = True
    samples_per_domain: int = 3
    lm_eval_limit: int | None = None


def evaluate(model_path: str | Path, *, plan_path: str | Path | None = None, checkpoint: str | Path | None = None,
             texts_path: str | Path, mc_path: str | Path | None = None, prompts_path: str | None = None,
             lm_eval_tasks: str | None = None, out: str | Path, settings: EvalSettings | None = None,
             router_rows: str | Path | None = None) -> Path:
    """Evaluate a plan (as a router mask) or a checkpoint against `model_path`; write `out` atomically.
    A healed plan's rows (`router_rows`, or the file the plan names) replace its kept router rows."""
    settings = settings or EvalSettings()
    if (plan_path is None) == (checkpoint is None):
        raise MoeprintError("give exactly one of --plan and --checkpoint.")
    # Read every input before loading any model, so bad input fails fast.
    texts = load_texts(texts_path)
    questions = load_choice_questions(mc_path) if mc_path else []
    prompts = load_prompts(prompts_path) if prompts_path else []
    config = load_config_dict(model_path)
    adapter_for(config)
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
    base = load_model(model_path)
    cut = (plan_cut(base, plan, name=Path(plan_path).stem, router_rows=rows_as_list(healed)) if plan
           else checkpoint_cut(base, checkpoint))
    result = evaluate_loaded(base, cut, texts=texts, questions=questions, prompts=prompts,
                             lm_eval_tasks=lm_eval_tasks, settings=settings)
    result["inputs"] = {
        "texts": {"path": str(texts_path), "sha256": file_sha256(texts_path), **result["inputs"]["texts"]},
        "mc": {"path": str(mc_path), "sha256": file_sha256(mc_path), "n": len(questions)} if mc_path else None,
        "prompts": {"source": str(prompts_path), "n": len(prompts),
                    "sha256": file_sha256(prompts_path) if Path(prompts_path).is_file() else None}
        if prompts_path else None,
    }
    if plan_path:
        result["cut"]["path"] = str(plan_path)
    return atomic_write_json(out, result)


def evaluate_loaded(base: LoadedModel, cut: Cut, *, texts, questions=(), prompts=(), lm_eval_tasks=None,
                    settings: EvalSettings | None = None, reference: text.BaseReference | None = None) -> dict[str, Any]:
    """The result dict for one cut. `reference` (the base side of the texts) may be shared across cuts."""
    settings = settings or EvalSettings()
    tok = base.tokenizer
    in_domain = cut.info.get("domain") or None
    base_side = base_cut(base)
    with Progress() as progress:
        if reference is None:
            windows = text.make_windows(texts, tok, settings.max_tokens, base.model)
            if not windows:
                raise MoeprintError("the texts are too short: no text has two or more tokens.")
            task = progress.task("base: texts", len(text.batches(windows, settings.batch_tokens)))
            reference = text.build_reference(base_side, windows, tok.pad_token_id, settings.batch_tokens,
                                             progress=task)
        task = progress.task(f"{cut.name}: texts", len(reference.groups))
        totals = text.compare_texts(reference, cut, base_model=base.model, progress=task)
        result: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": software_versions(),
            "base_model": base.path,
            "cut": {"name": cut.name, "kind": cut.kind, **cut.info},
            "settings": vars(settings).copy(),
            "inputs": {"texts": {"n": len({w.text_id for w in reference.windows}),
                                 "n_windows": len(reference.windows)}},
            "text": text.summarise(totals, in_domain),
            "mc": None,
            "generation": None,
            "speculative": None,
            "lm_eval": None,
        }
        if questions:
            n = sum(len(q.choices) for q in questions)
            scored_base = choice.score_choices(base_side, list(questions), tok, progress=progress.task("base: choices", n))
            scored_cut = choice.score_choices(cut, list(questions), tok, progress=progress.task(f"{cut.name}: choices", n))
            result["mc"] = choice.accuracy_table(scored_base, scored_cut, in_domain)
        if prompts:
            prompts = list(prompts)
            gen_base = generation.generate(base_side, prompts, tok, settings.max_new_tokens,
                                           progress=progress.task("base: generate", len(prompts)))
            gen_cut = generation.generate(cut, prompts, tok, settings.max_new_tokens,
                                          progress=progress.task(f"{cut.name}: generate", len(prompts)))
            result["generation"] = {
                "max_new_tokens": settings.max_new_tokens,
                "looping": {"min_span": generation.MIN_SPAN, "max_period": generation.MAX_PERIOD},
                **generation.health_table(gen_base, gen_cut, in_domain, samples_per_domain=settings.samples_per_domain),
            }
            if settings.speculative:
                counts = generation.speculative(base.model, cut, prompts, tok, settings.max_new_tokens,
                                                settings.draft_tokens,
                                                progress=progress.task(f"{cut.name}: draft for base", len(prompts)))
                result["speculative"] = generation.speculative_table(counts, in_domain, settings.draft_tokens)
    if lm_eval_tasks:
        from moeprint.evaluate.harness import run_lm_eval

        result["lm_eval"] = {
            "tasks": lm_eval_tasks,
            "base": run_lm_eval(base_side, tok, lm_eval_tasks, limit=settings.lm_eval_limit),
            "cut": run_lm_eval(cut, tok, lm_eval_tasks, limit=settings.lm_eval_limit),
        }
    return result
