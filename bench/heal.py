"""Healing benchmark (issue 15): what refitting the kept router rows gives, per criterion, objective and domain.

For every domain of the testbed at each size (default 16 and 8 of 32 kept) and every criterion (frequency,
gate-mass, reap-sum, greedy-loss, random), the cut is scored unhealed and healed by each objective
(bias-only baseline, layer-local, end-to-end): in-domain perplexity increase (ppl_cut - ppl_base) on the
domain's WHOLE test split, off-domain increase (every other testbed domain's test split, pooled), and the
increase on text the testbed never trained on (Perl's perldiag.pod, Debian package perl-modules-5.36).
Cost per heal: seconds (the calibration windows' base log-probs, built once per domain and seed, are
counted in every heal's seconds). --seeds S1,S2,..: one random draw per seed and every heal once per seed;
the table shows means and min..max over seeds.

Data (all disjoint by document, the corpus's own split):
    calibration split, first --calibration-chars per domain : recorded -> fingerprints (criteria), the healing
                                                              calibration texts and greedy-loss's search texts
    calibration split, next --validation-chars              : greedy-loss's validation split (never healed on)
                                                              (a shorter split, math's, is shared in proportion)
    test split (whole)                                      : every perplexity number below

Speed (what is measured is unchanged): every cut is scored by its NLL only, against the base NLL computed
once (the old scoring ran the base model again and the full KL for every cut, since the base log-probs did
not fit their 512 MB cache; --check-speed times both on one cut and checks the numbers are equal); a kept
set met twice is scored and healed once; greedy-loss runs one path per domain for every size.
Rows go to --jsonl as they are measured; --report FILE.. prints the table of finished runs.

    python bench/heal.py                                          # everything (slow: many hours on 2 shared cores)
    python bench/heal.py --domains code --objectives e2e,bias,local --off-chars 20000 --jsonl heal-code.jsonl
                                                                  # one domain per process, as in docs/heal.md
    python bench/heal.py --report bench/results/heal-*.jsonl      # the table of the runs so far
Targets (printed with their numbers, never tuned for): best healed cut at 16/32 <= 0.3x unhealed frequency's
in-domain increase in every domain; at 8/32 <= 0.5x; off-domain of a healed cut no worse than its unhealed cut.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from moeprint.evaluate import text  # noqa: E402
from moeprint.evaluate.cut import Cut, CutKind, base_cut, load_model  # noqa: E402
from moeprint.evaluate.heal import HealSettings, heal_rows, split_calibration  # noqa: E402
from moeprint.evaluate.inputs import EvalText  # noqa: E402
from moeprint.io.run import open_run  # noqa: E402
from moeprint.progress import Progress  # noqa: E402
from moeprint.select.greedy import calibration_batches, greedy_loss_select, run_calibration_texts  # noqa: E402
from moeprint.select.rankings import load_ranking, random_kept  # noqa: E402
from moeprint.testbed import testbed_domains, testbed_path, testbed_texts  # noqa: E402

UNSEEN = Path("/usr/share/perl/5.36.0/pod/perldiag.pod")  # Debian perl-modules-5.36: English prose, never trained on
UNSEEN_DOMAIN = "unseen:perldiag"
FINGERPRINT_CRITERIA = ("frequency", "gate-mass", "reap-sum")


def take_chars(docs: list[str], start: int, n: int | None) -> list[str]:
    """Documents covering characters [start, start + n) of the split, in order (n None: to the end)."""
    out, pos = [], 0
    for d in docs:
        lo, hi = max(start - pos, 0), len(d) if n is None else min(len(d), start + n - pos)
        if hi > lo:
            out.append(d[lo:hi])
        pos += len(d)
        if n is not None and pos >= start + n:
            break
    return out


def record_calibration(model: Path, tokenizer, docs: dict[str, list[str]], workdir: Path) -> Path:
    from moeprint.analyze import AnalyzeSettings, analyze_run
    from moeprint.record import RecordSettings, record
    from moeprint.types import PromptRecord

    window, prompts = 192, []  # prompts cut to fit the testbed's context
    for domain, texts in docs.items():
        for j, t in enumerate(texts):
            ids = tokenizer(t, add_special_tokens=False)["input_ids"]
            for start in range(0, len(ids), window):
                chunk = tokenizer.decode(ids[start : start + window]).strip()
                if chunk:
                    prompts.append(PromptRecord(f"cal:{domain}:{j}#{start}", domain, "testbed-calibration", text=chunk))
    run = workdir / "run"
    record(model, prompts, run, RecordSettings(max_new_tokens=1, batch_size=16, expert_norms=True), progress=True)
    analyze_run(
        run,
        AnalyzeSettings(criteria=tuple(FINGERPRINT_CRITERIA), with_stats=False, coactivation=False),
        progress=False,
    )
    return run


class PeakRSS:
    """Peak resident memory growth of this process inside the block (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self.proc, self.stop = psutil.Process(), threading.Event()
        self.start = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mb = (self.peak - self.start) / 2**20
        return False


@dataclass
class Row:
    domain: str
    n: int
    criterion: str
    objective: str  # "none" (unhealed), "bias", "local", "e2e"
    in_inc: float
    off_inc: float
    unseen_inc: float
    seconds: float = 0.0
    peak_mb: float = 0.0
    holdout_kl: tuple[float, float] | None = None  # (before, after)
    seed: int = 0  # the heal's seed (and random's draw); 0 for an unhealed fingerprint criterion


def base_nll_reference(base, windows) -> text.BaseReference:
    """The base side once: per-window NLL only (the bench reports perplexity, not KL, so no log-prob cache)."""
    with Progress() as progress:
        return text.build_reference(
            base_cut(base),
            windows,
            base.tokenizer.pad_token_id,
            4096,
            cache_bytes=0,
            progress=progress.task("base", len(text.batches(windows, 4096))),
        )


def cut_totals(ref: text.BaseReference, base, kept, rows) -> dict[str, text.DomainTotals]:
    """compare_texts' per-domain NLL sums for the cut routed from `rows`, without its base forward pass and
    KL (the base NLL comes from `ref`): the same log-softmax and gather, so the same perplexities."""
    totals: dict[str, text.DomainTotals] = {}
    with torch.no_grad(), base.adapter.router_mask(base.model, kept, rows):
        for idx in ref.groups:
            input_ids, attention = text.padded(ref.windows, idx, ref.pad_id)
            cut_lp = text.next_token_logprobs(base.model, input_ids, attention)[:, :-1]  # (B, S-1, V)
            nll_cut = -cut_lp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, S-1)
            valid = (attention[:, 1:] * attention[:, :-1]).bool()  # (B, S-1)
            for row, i in enumerate(idx):
                t = totals.setdefault(ref.windows[i].domain, text.DomainTotals())
                t.n_tokens += int(valid[row].sum())
                t.nll_base += float(ref.nll[i].double().sum())
                t.nll_cut += float(nll_cut[row][valid[row]].double().sum())
    return totals


def increases(totals: dict[str, text.DomainTotals], domain: str) -> tuple[float, float, float]:
    """(in-domain, pooled off-domain, unseen-text) perplexity increase."""
    off = text.DomainTotals()
    for d, t in totals.items():
        if d not in (domain, UNSEEN_DOMAIN):
            off.add(t)

    def increase(t: text.DomainTotals) -> float:
        s = t.summary()
        return s["ppl_cut"] - s["ppl_base"]

    return (
        increase(totals[domain]),
        increase(off),
        increase(totals[UNSEEN_DOMAIN]) if UNSEEN_DOMAIN in totals else float("nan"),
    )


def check_speed(base, ref: text.BaseReference, kept, domain: str) -> None:
    """The old scoring against cut_totals on one cut. The old bench scored with compare_texts on a reference
    whose log-probs did not fit its 512 MB cache (every run here: > 30 k tokens x 4,096 vocabulary), so it ran
    the base model again and computed the full KL for every cut: same perplexity increases, and the time ratio."""
    cut = Cut("cut", CutKind.PLAN, base.model, _activate=lambda: base.adapter.router_mask(base.model, kept, None))
    started = time.perf_counter()
    old = increases(text.compare_texts(ref, cut, base_model=base.model), domain)
    t_old = time.perf_counter() - started
    started = time.perf_counter()
    new = increases(cut_totals(ref, base, kept, None), domain)
    t_new = time.perf_counter() - started
    print(
        f"speed check ({domain}, one cut, {sum(len(w.ids) - 1 for w in ref.windows):,} tokens): old scoring "
        f"{t_old:.1f} s, new {t_new:.1f} s = {t_old / t_new:.2f}x faster per cut; same increases: {old == new} "
        f"{old} {new}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", help="comma-separated (default: all 8)")
    ap.add_argument("--sizes", default="16,8")
    ap.add_argument("--criteria", default="frequency,gate-mass,reap-sum,greedy-loss,random")
    ap.add_argument("--objectives", default="bias,local,e2e")
    ap.add_argument("--steps", type=int, default=60, help="most optimiser steps per heal (per layer for local)")
    ap.add_argument("--heal-tokens", type=int, default=2048, help="calibration tokens per heal (fit + held back)")
    ap.add_argument("--calibration-chars", type=int, default=40_000)
    ap.add_argument("--validation-chars", type=int, default=20_000, help="greedy-loss validation split")
    ap.add_argument("--greedy-tokens", type=int, default=1024)
    ap.add_argument("--greedy-candidates", type=int, default=3)
    ap.add_argument("--off-chars", type=int, default=None, help="cap each off-domain test split (default: whole)")
    ap.add_argument("--in-chars", type=int, default=None, help="cap the in-domain test split (smoke runs only)")
    ap.add_argument("--unseen-chars", type=int, default=60_000, help="characters of perldiag.pod scored")
    ap.add_argument("--seeds", default="0", help="comma-separated: random's draws and the heals' seeds")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument("--jsonl", type=Path, help="append every row here as soon as it is measured")
    ap.add_argument("--report", type=Path, nargs="+", help="only print the table of these --jsonl files")
    ap.add_argument("--check-speed", action="store_true", help="time the old scoring against the new on one cut")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP spinning on shared cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.report:
        rows = [Row(**{**r, "holdout_kl": r.get("holdout_kl") and tuple(r["holdout_kl"])}) for r in _read(args.report)]
        report(rows, 32, args.markdown)
        return
    seeds = [int(s) for s in args.seeds.split(",") if s]
    torch.manual_seed(seeds[0])
    all_domains = testbed_domains()
    domains = args.domains.split(",") if args.domains else all_domains
    sizes = [int(s) for s in args.sizes.split(",")]
    criteria = [c for c in args.criteria.split(",") if c]
    objectives = [o for o in args.objectives.split(",") if o]
    model_dir = testbed_path()
    base = load_model(model_dir)
    tok = base.tokenizer

    cal = testbed_texts("calibration", domains)
    fit_docs, val_docs = {}, {}
    for d in domains:
        n_cal, n_val, total = args.calibration_chars, args.validation_chars, sum(map(len, cal[d]))
        if total < n_cal + n_val:  # math's split is 39,644 characters: shared in the same proportion
            n_cal = total * n_cal // (n_cal + n_val)
            n_val = total - n_cal
            print(
                f"note: {d}'s calibration split has {total:,} characters: {n_cal:,} calibration, {n_val:,} validation"
            )
        fit_docs[d], val_docs[d] = take_chars(cal[d], 0, n_cal), take_chars(cal[d], n_cal, n_val)
    test = testbed_texts("test")
    eval_texts = [
        EvalText(f"{d}:{i}", d, t)
        for d in all_domains
        for i, t in enumerate(take_chars(test[d], 0, args.in_chars if d in domains else args.off_chars))
    ]
    if UNSEEN.is_file() and args.unseen_chars:
        eval_texts.append(EvalText("perldiag", UNSEEN_DOMAIN, UNSEEN.read_text(encoding="utf-8")[: args.unseen_chars]))
    else:
        print(f"note: {UNSEEN} not found (apt-get install perl-modules-5.36); no unseen-text column")

    rows: list[Row] = []
    started_all = time.perf_counter()

    def emit(row: Row) -> None:
        rows.append(row)
        print(_line(row), flush=True)
        if args.jsonl:
            with args.jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(row)) + "\n")

    with tempfile.TemporaryDirectory(prefix="moeprint-heal-") as tmp:
        run = record_calibration(model_dir, tok, fit_docs, Path(tmp))
        windows = text.make_windows(eval_texts, tok, 256, base.model)
        n_tok = {}
        for w in windows:
            n_tok[w.domain] = n_tok.get(w.domain, 0) + len(w.ids) - 1
        print("evaluation tokens per domain:", ", ".join(f"{d} {n:,}" for d, n in sorted(n_tok.items())))
        E, L = base.num_experts, base.num_layers
        ref = base_nll_reference(base, windows)
        if args.check_speed:
            ranking, _ = load_ranking(open_run(run), "frequency", domains[0])
            check_speed(base, ref, [sorted(ranking[f"layer_{l}"][: sizes[0]]) for l in range(L)], domains[0])
        with Progress() as progress:
            for domain in domains:
                prompts = run_calibration_texts(run, domain)
                cut_sets: list[tuple[str, int, tuple, int]] = []  # (criterion, n, kept, seed of the draw)
                for criterion in criteria:
                    if criterion == "random":
                        cut_sets += [("random", n, random_kept(L, E, n, seed), seed) for n in sizes for seed in seeds]
                    elif criterion == "greedy-loss":
                        # one greedy path per domain serves every size (it passes each on its way down)
                        ranking, _ = load_ranking(open_run(run), "reap-sum", domain)
                        stride = max(1, len(prompts) // max(1, args.greedy_tokens // 128))
                        batches = calibration_batches(prompts[::stride], tok, args.greedy_tokens, 256)
                        validation = calibration_batches(val_docs[domain], tok, args.greedy_tokens, 256)
                        sel = greedy_loss_select(
                            base.model,
                            base.adapter,
                            batches,
                            [ranking[f"layer_{l}"] for l in range(L)],
                            sizes,
                            args.greedy_candidates,
                            progress=progress.task(f"{domain} greedy-loss", E - min(sizes)),
                            validation=validation,
                        )
                        cut_sets += [("greedy-loss", n, sel.kept[n], 0) for n in sizes]
                    else:
                        ranking, _ = load_ranking(open_run(run), criterion, domain)
                        cut_sets += [
                            (criterion, n, tuple(tuple(sorted(ranking[f"layer_{l}"][:n])) for l in range(L)), 0)
                            for n in sizes
                        ]
                # Calibration windows and their base log-probs depend only on the seed (not on the cut or
                # the objective): built once per seed; the time it took is added to every heal's seconds.
                calibrations: dict[int, tuple[object, float]] = {}
                stride = max(1, len(prompts) // max(1, args.heal_tokens // 128))
                # A kept set met twice (e.g. greedy-loss choosing reap-sum's top-N) gives the same numbers:
                # scored and healed once (healing is deterministic for a seed, tested).
                scored: dict[tuple, tuple[float, float, float]] = {}
                healed: dict[tuple, tuple] = {}
                # Every cut unhealed first, then each objective over every cut (in --objectives order), so a
                # run stopped early has whole columns rather than whole criteria.
                for criterion, n, kept, draw in cut_sets:
                    if kept not in scored:
                        scored[kept] = increases(cut_totals(ref, base, kept, None), domain)
                    emit(Row(domain, n, criterion, "none", *scored[kept], seed=draw))
                for objective in objectives:
                    for criterion, n, kept, draw in cut_sets:
                        for seed in [draw] if criterion == "random" else seeds:
                            key = (kept, objective, seed)
                            if key not in healed:
                                settings = HealSettings(
                                    objective=objective,
                                    steps=args.steps,
                                    seed=seed,
                                    token_budget=args.heal_tokens,
                                    batch_tokens=512,
                                )
                                if seed not in calibrations:
                                    t0 = time.perf_counter()
                                    calib = split_calibration(base.model, tok, prompts[::stride], settings)
                                    calibrations[seed] = (calib, time.perf_counter() - t0)
                                calib, calib_seconds = calibrations[seed]
                                with PeakRSS() as mem:
                                    result = heal_rows(
                                        base.model,
                                        base.adapter,
                                        kept,
                                        calib,
                                        settings,
                                        progress=progress.task(
                                            f"{domain} {criterion} {n} {objective} seed {seed}",
                                            args.steps * (L if objective == "local" else 1),
                                        ),
                                    )
                                healed[key] = (
                                    increases(cut_totals(ref, base, kept, result.rows), domain),
                                    calib_seconds + result.seconds,
                                    mem.mb,
                                    (result.kl_before, result.kl_after),
                                )
                            incs, seconds, mb, kl = healed[key]
                            emit(Row(domain, n, criterion, objective, *incs, seconds, mb, kl, seed))
    print(f"wall time {time.perf_counter() - started_all:.0f} s")
    report(rows, base.num_experts, args.markdown)


def _read(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _line(r: Row) -> str:
    kl = f" heldout-KL {r.holdout_kl[0]:.3f}->{r.holdout_kl[1]:.3f}" if r.holdout_kl else ""
    cost = f" {r.seconds:.0f}s {r.peak_mb:.0f}MB" if r.objective != "none" else ""
    return (
        f"{r.domain:<18} {r.n:>2} {r.criterion:<11} {r.objective:<5} seed {r.seed} in +{r.in_inc:.3f} "
        f"off +{r.off_inc:.3f} unseen +{r.unseen_inc:.3f}{kl}{cost}"
    )


@dataclass
class Group:
    """The rows of one (domain, kept, criterion, healing) over seeds: means, and min..max when seeds differ."""

    rows: list[Row]

    def mean(self, attr: str) -> float:
        return sum(getattr(r, attr) for r in self.rows) / len(self.rows)

    def cell(self, attr: str) -> str:
        values = [getattr(r, attr) for r in self.rows]
        spread = f" ({min(values):.3f}..{max(values):.3f})" if len(set(values)) > 1 else ""
        return f"{self.mean(attr):.3f}{spread}"


def report(rows: list[Row], n_experts: int, markdown: Path | None) -> None:
    groups: dict[tuple, Group] = {}
    for r in rows:
        groups.setdefault((r.domain, r.n, r.criterion, r.objective), Group([])).rows.append(r)
    lines = [
        "| domain | kept | criterion | healing | seeds | in-domain Δppl | x freq. unhealed | off-domain Δppl | "
        "unseen Δppl | held-back KL | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    freq = {(d, n): g.mean("in_inc") for (d, n, c, o), g in groups.items() if c == "frequency" and o == "none"}
    for (domain, n, criterion, objective), g in groups.items():
        f = freq.get((domain, n))
        kl = ""
        if objective != "none":
            before = sum(r.holdout_kl[0] for r in g.rows) / len(g.rows)
            after = sum(r.holdout_kl[1] for r in g.rows) / len(g.rows)
            kl = f"{before:.3f} -> {after:.3f}"
        cost = f"{g.mean('seconds'):.0f}" if objective != "none" else ""
        ratio = f"{g.mean('in_inc') / f:.2f}" if f else ""
        lines.append(
            f"| {domain} | {n} | {criterion} | {objective} | {len(g.rows)} | {g.cell('in_inc')} | {ratio} | "
            f"{g.cell('off_inc')} | {g.cell('unseen_inc')} | {kl} | {cost} |"
        )
    table = "\n".join(lines)
    print("\n" + table + "\n")
    checks = []
    for (domain, n), f in sorted(freq.items()):
        healed = [(k, g) for k, g in groups.items() if k[:2] == (domain, n) and k[3] != "none"]
        if not healed:
            continue
        (_, _, criterion, objective), best = min(healed, key=lambda kg: kg[1].mean("in_inc"))
        bound = 0.3 if 2 * n >= n_experts else 0.5  # the targets: 16 of 32 and 8 of 32
        inc = best.mean("in_inc")
        checks.append(
            (
                inc <= bound * f,
                f"{domain} {n}: best healed {criterion}/{objective} "
                f"+{inc:.3f} = {inc / f:.2f}x unhealed frequency's +{f:.3f} (target <= {bound}x)",
            )
        )
    worse = []
    healed_groups = [(k, g) for k, g in groups.items() if k[3] != "none"]
    for k, g in healed_groups:
        unhealed = groups[(*k[:3], "none")].mean("off_inc")
        if g.mean("off_inc") > unhealed:
            worse.append(f"{'/'.join(map(str, k))} +{g.mean('off_inc'):.3f} vs +{unhealed:.3f}")
    checks.append(
        (
            not worse,
            f"off-domain: {len(healed_groups) - len(worse)} of {len(healed_groups)} healed cuts (means over seeds) "
            f"no worse than unhealed" + (": worse " + ", ".join(worse) if worse else ""),
        )
    )
    for ok, detail in checks:
        print(f"{'PASS' if ok else 'MISS'}  {detail}")
    if markdown:
        markdown.write_text(table + "\n\n" + "\n".join(f"- {'PASS' if ok else 'MISS'} {d}" for ok, d in checks) + "\n")


if __name__ == "__main__":
    main()
