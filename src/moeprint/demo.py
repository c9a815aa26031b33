"""`moeprint demo`: the whole pipeline, offline, on the committed testbed model.

    calibration texts --record--> run --analyze--> fingerprints --plan--> plan --prune--> checkpoint
                                                        |                                  |
    test texts ----------------------------------- sweep (masks) / evaluate (checkpoint) --+--> site

Fingerprints come from the testbed's calibration split and every quality number from its disjoint
test split, so the demo's retention numbers are honest held-out numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_text

DEMO_DOMAIN = "code"  # the testbed domain whose experts specialise most clearly
DEMO_EXPERTS = 8  # of 32: a quarter of the experts
SWEEP_SIZES = "16,8"
SWEEP_CRITERIA = ["frequency", "gate-mass", "reap-sum"]  # bench/quality.py compares all of them


@dataclass(frozen=True)
class DemoSettings:
    docs_per_domain: int = 16  # calibration documents recorded per domain
    doc_chars: int = 1000  # each document cut to this many characters (~250-400 tokens)
    test_docs_per_domain: int = 6  # every sweep cut is scored on every domain's test texts
    prompts_per_domain: int = 1  # generation-health and draft prompts: openings of test documents
    random_seeds: int = 3


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _texts_file(path: Path, split: str, n_docs: int, chars: int, declare: bool) -> Path:
    """The testbed's `split` texts as a moeprint JSONL file: {id, domain, text} per document."""
    from moeprint.testbed import testbed_texts

    texts = testbed_texts(split)
    rows: list[dict] = [{"declare_domains": sorted(texts)}] if declare else []
    for domain, docs in sorted(texts.items()):
        for i, doc in enumerate(docs[:n_docs]):
            rows.append({"id": f"{domain}-{split}-{i}", "domain": domain, "text": doc[:chars]})
    return _write_jsonl(path, rows)


def _prompts_file(path: Path, per_domain: int) -> Path:
    """Generation prompts: the first line of test documents, so the testbed continues text it knows."""
    from moeprint.testbed import testbed_texts

    texts = testbed_texts("test")
    rows: list[dict] = [{"declare_domains": sorted(texts)}]
    for domain, docs in sorted(texts.items()):
        for i, doc in enumerate(docs[-per_domain:]):  # the last documents: the sweep scores the first ones
            rows.append({"id": f"{domain}-prompt-{i}", "domain": domain, "text": doc[:120]})
    return _write_jsonl(path, rows)


def run_demo(
    out: str | Path = "demo-out", settings: DemoSettings | None = None, progress: bool = True
) -> dict[str, Path]:
    """Run every stage on the testbed; return {what: where} for everything written."""
    from moeprint.analyze.pipeline import AnalyzeSettings, analyze_run
    from moeprint.evaluate.compare import EvalSettings, evaluate
    from moeprint.evaluate.results import card_retention
    from moeprint.evaluate.sweep import SweepInputs, SweepSpec, sweep
    from moeprint.prune import CardOptions, build_checkpoint
    from moeprint.record import RecordSettings, record_run
    from moeprint.report.build import build_site
    from moeprint.select.plan import plan_from_run, save_plan
    from moeprint.testbed import testbed_path

    settings = settings or DemoSettings()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise MoeprintError(f"{out} exists and is not empty; remove it or pass another --out.")
    model = testbed_path()
    where: dict[str, Path] = {}

    started = time.perf_counter()

    def step(name: str):
        print(f"[moeprint demo {time.perf_counter() - started:5.0f} s] {name} ...", flush=True)

    step("prepare texts")
    calibration = _texts_file(
        out / "inputs" / "calibration.jsonl", "calibration", settings.docs_per_domain, settings.doc_chars, declare=True
    )
    test_texts = _texts_file(
        out / "inputs" / "test.jsonl", "test", settings.test_docs_per_domain, settings.doc_chars, declare=False
    )
    prompts = _prompts_file(out / "inputs" / "generation-prompts.jsonl", settings.prompts_per_domain)
    where["calibration prompts"], where["test texts"], where["generation prompts"] = calibration, test_texts, prompts

    step("record")
    run = record_run(
        model,
        [str(calibration)],
        out / "runs" / "testbed",
        RecordSettings(max_new_tokens=4, batch_size=8, expert_norms=True),
        progress=progress,
    )
    where["run (traces, prompts, manifest)"] = run

    step("analyze")
    where["fingerprints"] = analyze_run(run, AnalyzeSettings(n_perm=199, n_boot=50, token_perm=49), progress=progress)

    step("plan + evaluate + prune")
    plan = plan_from_run(run, DEMO_DOMAIN, DEMO_EXPERTS, criterion="gate-mass")
    plan_path = save_plan(plan, run / "plans" / f"{DEMO_DOMAIN}-{DEMO_EXPERTS}-gate-mass.json")
    where["plan"] = plan_path
    name = f"testbed-{DEMO_DOMAIN}-{DEMO_EXPERTS}-experts"
    # The plan is evaluated as a router mask (equal to the pruned model, as the tests prove), so the
    # retention numbers can go into the checkpoint's model card.
    evaluation = evaluate(
        model,
        plan_path=plan_path,
        texts_path=test_texts,
        prompts_path=str(prompts),
        out=run / "evals" / f"{name}.json",
        settings=EvalSettings(max_new_tokens=24),
    )
    where["evaluation (perplexity, KL, generation health, draft acceptance)"] = evaluation
    result = build_checkpoint(
        model,
        plan,
        out / "checkpoints" / name,
        card=CardOptions(retention=card_retention(evaluation), example_prompts=("import os\n\ndef ",)),
        progress=progress,
    )
    where["pruned checkpoint (+ README.md card)"] = result.out_dir

    step("sweep")
    from moeprint.testbed import testbed_domains

    spec = SweepSpec(
        domains=testbed_domains(), sizes=SWEEP_SIZES, criteria=SWEEP_CRITERIA, random_seeds=settings.random_seeds
    )
    where["sweep (CSV, JSON, plots)"] = sweep(SweepInputs(run, test_texts, model), spec, run / "evals" / "sweep")

    step("site")
    where["site"] = build_site(run) / "index.html"
    return where
