"""`moeprint sweep`: every domain x size x criterion, plus random selections as the floor, evaluated as
router masks on ONE loaded base model. The base's side of the texts is computed once and shared.

Output folder (manifest.json written last):
    results.json   schema `moeprint.sweep/1`: settings, provenance and one entry per cut (docs/evaluate.md)
    results.csv    one row per (cut, evaluation domain): perplexities, KL, top-1 agreement
    retention.png/.svg, kl.png/.svg   one panel per domain, one line per criterion, random as a band
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.errors import MoeprintError
from moeprint.evaluate import choice, text
from moeprint.evaluate.cut import base_cut, load_model, plan_cut
from moeprint.evaluate.disjoint import check_disjoint
from moeprint.evaluate.inputs import file_sha256, load_choice_questions, load_texts
from moeprint.evaluate.results import SWEEP_RESULTS, SWEEP_SCHEMA, SweepResult
from moeprint.io.atomic import atomic_directory, atomic_write_json, atomic_write_text
from moeprint.io.identity import check_same_model
from moeprint.io.loader import LoadSettings, check_context, context_length
from moeprint.io.run import RunDir, open_run, software_versions
from moeprint.progress import Progress
from moeprint.prune.rows import load_router_rows, plan_of_rows, rows_as_list
from moeprint.select.plan import model_signature, plan_from_ranking, validate_plan
from moeprint.select.rankings import load_ranking
from moeprint.select.sizes import Sizes, resolve_sizes
from moeprint.select.sources import random_plan
from moeprint.types import ALL, PrunePlan

if TYPE_CHECKING:
    from moeprint.cluster import ClusterSettings

CSV_COLUMNS = (
    "plan_domain",
    "criterion",
    "n_experts",
    "seed",
    "eval_domain",
    "in_domain",
    "n_tokens",
    "ppl_base",
    "ppl_cut",
    "ppl_ratio",
    "ppl_increase",
    "kl",
    "top1_agreement",
)


@dataclass
class SweepSpec:
    domains: list[str]
    sizes: str | Sizes  # the one sizes grammar (moeprint.select.sizes): "8,16", "4-32" or "50%,25%"
    criteria: list[str]
    random_seeds: int = 5
    max_tokens: int = 256
    batch_tokens: int = 4096
    allow_unverified: bool = False
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    router_rows: list[str] = field(default_factory=list)  # healed cuts: rows files (each records its plan)


@dataclass
class SweepJob:
    """Everything checked and planned before any weight is read; picklable (Ray workers get a copy)."""

    run: Any  # RunDir
    spec: SweepSpec
    texts_path: str
    mc_path: str | None
    texts: list
    questions: list
    disjoint: Any
    model_path: str
    L: int
    E: int
    k: int
    sizes: list[int]
    plans: list[tuple[PrunePlan, int | None]]  # (plan, random seed or None), in result order
    sources: dict[str, str]
    healed: dict[int, tuple[Any, str]] = field(default_factory=dict)  # plan index -> (HealedRows, rows file)
    load: LoadSettings = LoadSettings()  # where and in which dtype the base runs


@dataclass(frozen=True)
class SweepInputs:
    """What a sweep reads: the run (its rankings and recorded prompts), the evaluation texts, optional
    multiple-choice questions, and the base model (None: the model the run was recorded on)."""

    run_dir: str | Path
    texts_path: str | Path
    model_path: str | Path | None = None
    mc_path: str | Path | None = None


def sweep(
    inputs: SweepInputs,
    spec: SweepSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    load: LoadSettings = LoadSettings(),
    cluster: ClusterSettings | None = None,
) -> Path:
    """With `cluster`, the cuts are spread over Ray workers (moeprint.evaluate.distributed); same result."""
    if cluster is not None and load.device != "auto":
        raise MoeprintError(
            "--ray places the model on each worker: drop --device "
            "(workers use their GPUs with --gpus-per-worker, else the CPU)."
        )
    job = prepare_sweep(inputs, spec, load)
    target = atomic_directory(out, overwrite=overwrite, kind="sweep")  # checked and locked before the work
    try:
        if cluster is not None:
            from moeprint.evaluate.distributed import sweep_on_ray

            job = dataclasses.replace(job, load=LoadSettings(cluster.device, load.dtype))
            cuts, n_windows = sweep_on_ray(job, cluster)
        else:
            cuts, n_windows = _evaluate_here(job)
    except BaseException:
        target.lock.release()  # the work failed before the output was opened: free the output for the next try
        raise
    return write_sweep(job, cuts, n_windows, target)


def _evaluate_here(job: SweepJob) -> tuple[list[dict[str, Any]], int]:
    """Every cut of `job` in this process: (the cuts' entries in plan order, the number of text windows)."""
    with Progress() as progress:
        evaluator = CutEvaluator(job, progress)
        advance = progress.task("cuts", len(job.plans))
        cuts = []
        for i in range(len(job.plans)):
            cuts.append(evaluator.evaluate(i))
            advance()
    return cuts, len(evaluator.windows)


def prepare_sweep(inputs: SweepInputs, spec: SweepSpec, load: LoadSettings = LoadSettings()) -> SweepJob:
    """Every input read and checked and every plan built, before any weight is read."""
    run = open_run(inputs.run_dir)
    manifest = run.manifest()
    texts = load_texts(inputs.texts_path)
    questions = load_choice_questions(inputs.mc_path) if inputs.mc_path else []
    if not spec.domains or not spec.criteria and spec.random_seeds < 1:
        raise MoeprintError("give at least one domain and at least one criterion or random seed.")
    text_domains = {t.domain for t in texts}
    missing = [d for d in spec.domains if d != ALL and d not in text_domains]
    if missing:
        raise MoeprintError(
            f"no evaluation texts of domain {missing[0]!r} in {inputs.texts_path} "
            f"(it has: {', '.join(sorted(text_domains))})."
        )
    items = [(f"text {t.text_id}", t.text) for t in texts] + [
        (f"question {q.question_id}", q.question) for q in questions
    ]
    disjoint = check_disjoint(run, items, spec.allow_unverified)

    model_path = inputs.model_path or manifest.model.name
    if not model_path:
        raise MoeprintError(f"{run.root}/manifest.json names no model; pass --model.")
    config = load_config_dict(model_path)
    adapter = adapter_for(config)
    L, E, k = adapter.num_layers(config), adapter.num_experts(config), adapter.top_k(config)
    if (manifest.num_layers, manifest.num_experts) != (L, E):
        raise MoeprintError(
            f"{run.root} was recorded on a model with {manifest.num_layers} layers x "
            f"{manifest.num_experts} experts, but {model_path} has {L} x {E}."
        )
    sizes = resolve_sizes(spec.sizes, E)
    check_same_model(manifest.model.sha256, model_path, f"run {run.root}")
    check_context(spec.max_tokens, context_length(config), "--max-tokens")
    plans, sources = _ranked_plans(run, spec, sizes, config, str(model_path))
    plans += _random_plans(spec, sizes, config, str(model_path))
    healed = {}
    for rows_path in spec.router_rows:
        rows = load_router_rows(rows_path).check_hidden(config, str(rows_path))
        healed[len(plans)] = (rows, str(rows_path))
        plans.append((validate_plan(plan_of_rows(rows, str(rows_path)), model_signature(config)), None))
    return SweepJob(
        run,
        spec,
        str(inputs.texts_path),
        str(inputs.mc_path) if inputs.mc_path else None,
        texts,
        questions,
        disjoint,
        str(model_path),
        L,
        E,
        k,
        sizes,
        plans,
        sources,
        healed,
        load,
    )


def _ranked_plans(
    run: RunDir, spec: SweepSpec, sizes: list[int], config: dict, model_path: str
) -> tuple[list[tuple[PrunePlan, None]], dict[str, str]]:
    """One plan per (domain, criterion, size), from the run's rankings; and where each criterion's ranking came from."""
    signature = model_signature(config)
    plans: list[tuple[PrunePlan, None]] = []
    sources = {}
    for domain in spec.domains:
        for criterion in spec.criteria:
            ranking, source = load_ranking(run, criterion, domain)
            sources[criterion] = "computed from fingerprints" if source == "fingerprints" else "rankings file"
            for n in sizes:
                plan = plan_from_ranking(
                    ranking, n, signature, base_model=model_path, domain=domain, criterion=criterion, source=source
                )
                plans.append((plan, None))
    return plans, sources


def _random_plans(spec: SweepSpec, sizes: list[int], config: dict, model_path: str) -> list[tuple[PrunePlan, int]]:
    """One random plan per (seed, size): the baseline every criterion is compared with."""
    return [(random_plan(model_path, n, seed, config), seed) for seed in range(spec.random_seeds) for n in sizes]


class CutEvaluator:
    """The base loaded once with its side of every text computed; `evaluate(i)` gives cut i's entry.
    One per process: `sweep` keeps one, and so does each Ray worker."""

    def __init__(self, job: SweepJob, progress: Progress | None = None):
        self.job = job
        self.base = load_model(job.model_path, job.load)  # the one place a sweep loads its base
        tok = self.base.tokenizer
        self.windows = text.make_windows(job.texts, tok, job.spec.max_tokens, self.base.model)
        if not self.windows:
            raise MoeprintError("the evaluation texts are too short: none has two or more tokens.")
        self.base_side = base_cut(self.base)
        n_groups = len(text.batches(self.windows, job.spec.batch_tokens))
        self.ref = text.build_reference(
            self.base_side,
            self.windows,
            tok.pad_token_id,
            job.spec.batch_tokens,
            progress=progress.task("base", n_groups) if progress else None,
        )
        self.scored_base = choice.score_choices(self.base_side, job.questions, tok) if job.questions else None
        self.done: dict[tuple, dict] = {}  # identical masks (e.g. every expert kept) are evaluated once

    @property
    def n_tokens(self) -> int:
        """Predicted tokens per cut (for a rate)."""
        return sum(len(nll) for nll in self.ref.nll)

    def evaluate(self, i: int) -> dict[str, Any]:
        plan, seed = self.job.plans[i]
        healed, rows_source = self.job.healed.get(i, (None, None))
        questions, tok = self.job.questions, self.base.tokenizer
        cut = plan_cut(
            self.base,
            plan,
            name=f"{plan.domain or 'random'}-{plan.criterion}-{plan.n_experts}"
            + (f"-s{seed}" if seed is not None else "")
            + (f"-healed-{healed.info.get('objective', 'rows')}" if healed else ""),
            router_rows=rows_as_list(healed),
        )
        key = plan.kept if healed is None else i  # a healed cut routes differently from its plan's mask
        if key not in self.done:
            sections = {"text": text.compare_texts(self.ref, cut, base_model=self.base.model)}
            if questions:
                sections["mc"] = choice.score_choices(cut, questions, tok)
            self.done[key] = sections
        sections = self.done[key]
        entry = {
            "cut": {"name": cut.name, "kind": "plan", **cut.info, "seed": seed, "kept": [list(x) for x in plan.kept]},
            "text": text.summarise(sections["text"], plan.domain or None),
        }
        if healed is not None:  # its own line in the plots and CSV, beside the unhealed criterion
            entry["cut"]["criterion"] = f"{plan.criterion}+healed-{healed.info.get('objective', 'rows')}"
            entry["cut"]["router_rows"] = rows_source
        if questions:
            entry["mc"] = choice.accuracy_table(self.scored_base, sections["mc"], plan.domain or None)
        return entry


def write_sweep(job: SweepJob, cuts: list[dict[str, Any]], n_windows: int, target) -> Path:
    """results.json, results.csv, plots and manifest.json (last), all at once, into `target`: the output's
    `atomic_directory`, opened (checked and locked) before the work."""
    spec, texts_path, mc_path = job.spec, job.texts_path, job.mc_path
    doc = {
        "schema": SWEEP_SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": software_versions(),
        "run": str(job.run.root),
        "base_model": job.model_path,
        "num_layers": job.L,
        "num_experts": job.E,
        "top_k": job.k,
        "domains": spec.domains,
        "sizes": job.sizes,
        "criteria": spec.criteria,
        "random_seeds": spec.random_seeds,
        "ranking_source": job.sources,
        "calibration": job.disjoint.to_json(),
        "inputs": {
            "texts": {
                "path": texts_path,
                "sha256": file_sha256(texts_path),
                "n": len(job.texts),
                "n_windows": n_windows,
                "max_tokens": spec.max_tokens,
            },
            "mc": {"path": mc_path, "sha256": file_sha256(mc_path), "n": len(job.questions)} if mc_path else None,
        },
        "cuts": cuts,
    }
    result = SweepResult.from_doc(doc)
    with target as tmp:
        atomic_write_json(tmp / SWEEP_RESULTS, doc)
        atomic_write_text(tmp / "results.csv", to_csv(result))
        if spec.plots:
            from moeprint.evaluate.plots import plot_sweep

            plot_sweep(result, tmp)
        atomic_write_json(
            tmp / "manifest.json",
            {
                "kind": "sweep",
                "schema": SWEEP_SCHEMA,
                "run": str(job.run.root),
                "n_cuts": len(cuts),
                "files": sorted(p.name for p in tmp.iterdir()),
            },
        )
    return target.path


def csv_rows(result: SweepResult) -> list[dict[str, Any]]:
    rows = []
    for entry in result.cuts:
        cut = entry.cut
        for domain, m in entry.text_domains().items():
            rows.append(
                {
                    "plan_domain": cut.domain,
                    "criterion": cut.criterion,
                    "n_experts": cut.n_experts,
                    "seed": cut.seed,
                    "eval_domain": domain,
                    "in_domain": (domain == cut.domain) if cut.domain else None,
                    "n_tokens": m.n_tokens,
                    "ppl_base": m.ppl_base,
                    "ppl_cut": m.ppl_cut,
                    "ppl_ratio": m.ppl_ratio,
                    "ppl_increase": m.increase,
                    "kl": m.kl,
                    "top1_agreement": m.top1_agreement,
                }
            )
    return rows


def to_csv(result: SweepResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(result):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
