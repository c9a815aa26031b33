"""Quality benchmark (issue 5): does a criterion beat frequency and chance, and does the domain matter?

For each domain at 50% and 25% of the experts kept, prints the in-domain perplexity increase
(ppl_cut - ppl_base on held-out texts) of every criterion, of random selection (mean of >= 5 seeds),
and the cross-domain check (the same criterion selected from each other domain's statistics, mean),
then every target with its numbers. Targets are reported, never tuned for.

    python bench/quality.py                                   # the testbed: record, analyze, sweep
    python bench/quality.py --model M --corpus C              # another model + <C>/<domain>/{calibration,test}.jsonl
    python bench/quality.py --run RUN --texts HELD.jsonl      # any recorded (and analyzed) run
    python bench/quality.py --sweep DIR                       # an existing sweep folder
Options: --criteria, --seeds, --markdown FILE (the results table for docs/evaluate.md), --plot-to DIR.
--greedy-from CRITERION adds the model-in-the-loop `greedy-loss` selection (select/greedy.py), started
from that criterion's ranking and scored on each domain's recorded calibration prompts (never the test
texts); --greedy-tokens and --greedy-candidates set its cost. Needs a run and model (not --sweep).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from moeprint.evaluate.results import SweepResult, read_result  # noqa: E402
from moeprint.evaluate.sweep import SweepInputs, SweepSpec, sweep  # noqa: E402
from moeprint.testbed.quality import check_targets, criterion_summary, markdown_table, quality_rows  # noqa: E402


def corpus_split(corpus: Path, split: str, max_chars: int) -> list[dict]:
    """Rows {id, domain, text} of `<corpus>/<domain>/<split>.jsonl`, the first documents up to `max_chars` per domain."""
    rows = []
    for domain_dir in sorted(p for p in corpus.iterdir() if (p / f"{split}.jsonl").exists()):
        used = 0
        for line in (domain_dir / f"{split}.jsonl").open(encoding="utf-8"):
            if used >= max_chars:
                break
            doc = json.loads(line)
            text = doc["text"][: max_chars - used]
            used += len(text)
            rows.append({"id": f"{split}:{doc['id']}", "domain": domain_dir.name, "text": text})
    return rows


def prepare(
    model: Path, corpus: Path, workdir: Path, calibration_chars: int, test_chars: int, criteria: list[str]
) -> tuple[Path, Path, list[str]]:
    """Record the calibration split on `model` (with expert norms, for REAP/EAN), analyze it, and write the
    test split as held-out texts. The corpus keeps its splits disjoint by document; the sweep re-checks."""
    from transformers import AutoTokenizer

    from moeprint.record import RecordSettings, record
    from moeprint.types import PromptRecord

    tokenizer = AutoTokenizer.from_pretrained(model)
    window = 192  # calibration prompts are cut to fit the testbed's context
    prompts = []
    for row in corpus_split(corpus, "calibration", calibration_chars):
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), window):
            chunk = tokenizer.decode(ids[start : start + window]).strip()
            if chunk:
                prompts.append(PromptRecord(f"{row['id']}#{start}", row["domain"], "testbed-calibration", text=chunk))
    run = workdir / "run"
    record(model, prompts, run, RecordSettings(max_new_tokens=1, batch_size=16, expert_norms=True), progress=True)
    from moeprint.analyze import AnalyzeSettings, analyze_run

    analyze_run(run, AnalyzeSettings(criteria=criteria, with_stats=False, coactivation=False))
    texts = workdir / "heldout.jsonl"
    test_rows = corpus_split(corpus, "test", test_chars)
    texts.write_text("".join(json.dumps(r) + "\n" for r in test_rows), encoding="utf-8")
    return run, texts, sorted({r["domain"] for r in test_rows})


def greedy_cuts(
    run: Path, model: Path, texts: Path, domains: list[str], sizes: list[int], start: str, tokens: int, candidates: int
) -> list[dict]:
    """Sweep-format entries of the `greedy-loss` selection per domain and size, evaluated like the sweep's
    cuts (router masks on one loaded base, the same held-out windows). Prints its cost."""
    import time

    from moeprint.evaluate import text
    from moeprint.evaluate.cut import Cut, CutKind, base_cut, load_model
    from moeprint.evaluate.inputs import load_texts
    from moeprint.io.run import open_run
    from moeprint.progress import Progress
    from moeprint.select.greedy import calibration_batches, greedy_loss_select, run_calibration_texts
    from moeprint.select.rankings import load_ranking

    base = load_model(model)
    windows = text.make_windows(load_texts(texts), base.tokenizer, 256, base.model)
    entries, passes, started = [], 0, time.perf_counter()
    with Progress() as progress:
        ref = text.build_reference(base_cut(base), windows, base.tokenizer.pad_token_id, 4096)
        E = base.num_experts
        advance = progress.task("greedy-loss rounds", len(domains) * (E - min(sizes)))
        for domain in domains:
            ranking, _ = load_ranking(open_run(run), start, domain)
            prompts = run_calibration_texts(run, domain)
            stride = max(1, len(prompts) // max(1, tokens // 128))  # spread the budget over the domain's documents
            batches = calibration_batches(prompts[::stride], base.tokenizer, tokens, 256)
            sel = greedy_loss_select(
                base.model,
                base.adapter,
                batches,
                [ranking[f"layer_{l}"] for l in range(base.num_layers)],
                sizes,
                candidates,
                progress=advance,
            )
            passes += sel.forward_passes
            for n in sizes:
                kept = sel.kept[n]
                cut = Cut(
                    f"{domain}-greedy-loss-{n}",
                    CutKind.PLAN,
                    base.model,
                    kept=kept,
                    adapter=base.adapter,
                    _activate=lambda kept=kept: base.adapter.router_mask(base.model, kept),
                )
                totals = text.compare_texts(ref, cut, base_model=base.model)
                picked = "greedy" if sel.greedy_loss[n] <= sel.initial_loss[n] else start
                print(
                    f"greedy-loss {domain} {n}: calibration loss {sel.initial_loss[n]:.4f} ({start} top-{n}) -> "
                    f"{sel.greedy_loss[n]:.4f} (greedy path); kept the {picked} set"
                )
                entries.append(
                    {
                        "cut": {
                            "name": f"{domain}-greedy-loss-{n}",
                            "kind": "plan",
                            "domain": domain,
                            "criterion": "greedy-loss",
                            "n_experts": n,
                            "top_k": min(base.top_k, n),
                            "num_experts": E,
                            "seed": None,
                            "kept": [list(x) for x in kept],
                        },
                        "text": text.summarise(totals, domain),
                    }
                )
    print(
        f"greedy-loss: {passes} masked forward passes of <= {tokens} calibration tokens over {len(domains)} domains "
        f"({passes // max(1, len(domains))} per domain), {time.perf_counter() - started:.0f} s"
    )
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--texts", type=Path)
    ap.add_argument("--corpus", type=Path, help="<corpus>/<domain>/{calibration,test}.jsonl (default: the testbed's)")
    ap.add_argument("--calibration-chars", type=int, default=40_000, help="calibration text per domain")
    ap.add_argument("--test-chars", type=int, default=12_000, help="held-out text per domain")
    ap.add_argument("--domains", help="comma-separated (default: every domain of the texts)")
    ap.add_argument("--criteria", default="frequency,gate-mass,reap,reap-sum,ean,lift")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--sizes", default="25%,50%", help="sizes to sweep; the targets use 25% and 50%, which must be in it"
    )
    ap.add_argument("--sweep", type=Path, help="read this sweep folder instead of running one")
    ap.add_argument("--keep", type=Path, help="write the sweep folder here (default: a temp dir)")
    ap.add_argument("--markdown", type=Path, help="also write the results table (Markdown) here")
    ap.add_argument("--plot-to", type=Path, help="copy retention.png/svg here")
    ap.add_argument("--greedy-from", help="also evaluate greedy-loss started from this criterion's ranking")
    ap.add_argument("--greedy-tokens", type=int, default=1024, help="calibration tokens per greedy-loss pass")
    ap.add_argument("--greedy-candidates", type=int, default=3, help="bottom-M candidates tried per layer and round")
    args = ap.parse_args()
    criteria = [c for c in args.criteria.split(",") if c]

    tmp = Path(tempfile.mkdtemp(prefix="moeprint-quality-"))
    try:
        if args.sweep:
            out = args.sweep
        else:
            if args.run and args.texts:
                run, texts, model = args.run, args.texts, args.model
                domains = (
                    args.domains.split(",")
                    if args.domains
                    else sorted({json.loads(line)["domain"] for line in texts.open() if line.strip()})
                )
            else:
                model, corpus = args.model, args.corpus
                if model is None or corpus is None:
                    from moeprint.testbed import testbed_data_path, testbed_path

                    model, corpus = model or testbed_path(), corpus or testbed_data_path()
                run, texts, domains = prepare(model, corpus, tmp, args.calibration_chars, args.test_chars, criteria)
                if args.domains:
                    domains = args.domains.split(",")
            out = args.keep or tmp / "sweep"
            spec = SweepSpec(domains=domains, sizes=args.sizes, criteria=criteria, random_seeds=args.seeds)
            sweep(SweepInputs(run, texts, model), spec, out, overwrite=True)
        doc = dict(read_result(out).doc)
        if args.greedy_from and not args.sweep:
            doc["cuts"] += greedy_cuts(
                run, model, texts, domains, doc["sizes"], args.greedy_from, args.greedy_tokens, args.greedy_candidates
            )
        E = doc["num_experts"]
        half, quarter = round(E * 0.5), round(E * 0.25)
        rows = [r for r in quality_rows(SweepResult.from_doc(doc)) if r["n_experts"] in (half, quarter)]
        table = markdown_table(rows)
        print(
            f"model {doc['base_model']} ({doc['num_layers']} layers x {E} experts, top-{doc['top_k']}); "
            f"calibration {doc['calibration']['status']}; rankings from {doc['ranking_source']}"
        )
        print(
            "in-domain perplexity increase (cut - base); in parentheses: the same criterion selected from the "
            "other domains' statistics (mean)\n"
        )
        print(table)
        summary = criterion_summary(rows)
        print("\neach criterion across the domains:\n")
        print(summary)
        targets = check_targets(rows, half, quarter)
        print()
        for t in targets:
            print(f"{'PASS' if t['passed'] else 'MISS'}  {t['domain']:<14} {t['target']}: {t['detail']}")
        n_pass = sum(t["passed"] for t in targets)
        print(f"\n{n_pass} of {len(targets)} target checks met.")
        if args.markdown:
            args.markdown.write_text(table + "\n\n" + summary + "\n")
        if args.plot_to:
            for ext in ("png", "svg"):
                shutil.copy(out / f"retention.{ext}", args.plot_to / f"retention.{ext}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
