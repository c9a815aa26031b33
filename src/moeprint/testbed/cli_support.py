"""Glue between the `moeprint testbed` commands and the library (defaults, packaged folders, tables)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_json
from moeprint.testbed import DATA_DIR, MODEL_DIR


def run_train(corpus, out, steps, seed, miniature, overwrite) -> tuple[Path, dict]:
    from moeprint.testbed.corpus import export_eval_texts
    from moeprint.testbed.train import MINIATURE, TrainConfig, train_testbed

    cfg = TrainConfig(**MINIATURE) if miniature else TrainConfig()
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if corpus is None:
        if not miniature:
            raise MoeprintError(
                "--corpus is required (the train split is not committed); "
                "build it with `moeprint testbed corpus --out DIR`."
            )
        corpus = DATA_DIR  # the miniature trains on the committed calibration texts
    corpus = Path(corpus)
    if not (corpus / "manifest.json").exists():
        raise MoeprintError(f"{corpus} is not a testbed corpus (no manifest.json); run `moeprint testbed corpus`.")
    if out is None:
        if miniature:
            raise MoeprintError("--miniature needs --out (it never replaces the packaged testbed).")
        out, overwrite = MODEL_DIR, True
    out = Path(out)
    manifest = train_testbed(corpus, out, cfg, overwrite=overwrite)
    if out.resolve() == MODEL_DIR.resolve():  # the packaged model and its evaluation texts must match
        export_eval_texts(corpus, DATA_DIR)
    return out, manifest


def fitness_table(report: dict) -> str:
    """Markdown tables of a fitness report."""
    lines = ["| domain | test ppl | unigram ppl |", "|---|---:|---:|"]
    for d, ppl in report["perplexity"].items():
        lines.append(f"| {d} | {ppl:.1f} | {report['unigram_perplexity'][d]:.1f} |")
    lines += [
        "",
        "min expert share per layer: " + ", ".join(f"{100 * x:.2f}%" for x in report["min_expert_share_per_layer"]),
        "",
    ]
    ut, uu = report["usage_trained"], report["usage_untrained"]
    key = next(k for k in ut if k.startswith("top"))
    lines += [
        "| usage statistic (mean over domain pairs) | trained | untrained |",
        "|---|---:|---:|",
        f"| total-variation distance of expert shares | {ut['tv_distance_mean']:.3f} | {uu['tv_distance_mean']:.3f} |",
        f"| {key.replace('_', ' ')} | {ut[key]:.3f} | {uu[key]:.3f} |",
        "",
    ]
    lines += [
        "| criterion | N | domain | own-selection ppl | others' mean ppl | reduction "
        "| same-source others' mean ppl | same-source reduction |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["cross_domain"].values():
        same = r.get("same_source_reduction")
        same_cells = f"{r['same_source_others_mean']:.1f} | {100 * same:.0f}%" if same is not None else "- | -"
        lines.append(
            f"| {r['criterion']} | {r['n']} | {r['domain']} | {r['own']:.1f} | {r['others_mean']:.1f} "
            f"| {100 * r['reduction']:.0f}% | {same_cells} |"
        )
    return "\n".join(lines)


def run_fitness(out, test_tokens: int) -> str:
    from moeprint.testbed import testbed_data_path, testbed_path
    from moeprint.testbed.fitness import fitness_report

    report = fitness_report(testbed_path(), testbed_data_path(), test_tokens=test_tokens, progress=True)
    if out:
        atomic_write_json(out, report)
    return fitness_table(report)
