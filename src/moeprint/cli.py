"""The `moeprint` command: parse, validate, call one library function, print where results went.

Every command is a thin shell over one library call. Library code raises MoeprintError for bad
input; `main` turns it into one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from moeprint import __version__
from moeprint.cli_types import (
    SEGMENT,
    count_option,
    domains_option,
    max_tokens_option,
    names_option,
    sizes_option,
)
from moeprint.errors import MoeprintError
from moeprint.io.loader import DTYPES, LoadSettings, check_device
from moeprint.types import ALL

# Parameters that name what a command writes; every other path parameter is an input.
OUTPUT_PARAMS = ("out", "out_dir", "out_path")
# String parameters that may name an input file (`--prompts FILE` or `--prompts BENCHMARK:FILE`).
PATH_STRING_PARAMS = ("sources", "prompts_path")


def _input_paths(command: click.Command, params: dict) -> list[str]:
    paths = []
    for p in command.params:
        if p.name in OUTPUT_PARAMS or params.get(p.name) is None:
            continue
        values = params[p.name] if isinstance(params[p.name], (tuple, list)) else [params[p.name]]
        if isinstance(p.type, click.Path):
            paths += [str(v) for v in values]
        elif p.name in PATH_STRING_PARAMS:
            paths += [
                v for value in map(str, values) for v in (value, value.partition(":")[2]) if v and Path(v).exists()
            ]
    return paths


class _GuardedCommand(click.Command):
    """Checks every output path against every input path of the command before it runs (moeprint.io.outputs):
    the one place that keeps `--out` from equalling, containing or lying inside what the command reads."""

    def invoke(self, ctx: click.Context):
        from moeprint.io.outputs import check_output_path

        inputs = _input_paths(self, ctx.params)
        for name in OUTPUT_PARAMS:
            if ctx.params.get(name):
                check_output_path(ctx.params[name], inputs)
        return super().invoke(ctx)


class _Group(click.Group):
    command_class = _GuardedCommand
    group_class = type  # subgroups (testbed) guard their commands too


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="moeprint")
def cli() -> None:
    """Fingerprint the experts of Mixture-of-Experts models and prune them into domain specialists.

    Pipeline: record -> analyze -> plan [-> heal] -> prune -> evaluate -> site. `moeprint demo` runs it all
    on the built-in testbed model.
    """


class DeviceType(click.ParamType):
    """--device: auto, cpu, cuda or cuda:N (whether the GPU exists is checked when the model loads)."""

    name = "device"

    def convert(self, value, param, ctx):
        try:
            return check_device(str(value))
        except MoeprintError as e:
            self.fail(str(e), param, ctx)


DEVICE = DeviceType()
DTYPE = click.Choice(list(DTYPES))


def _load_option_flags(f):
    """--device and --dtype of every command that runs a model; the command receives `load: LoadSettings`."""

    @functools.wraps(f)
    def wrapper(*args, device, load_dtype, **kwargs):
        return f(*args, load=LoadSettings(device, load_dtype), **kwargs)

    wrapper = click.option(
        "--dtype",
        "load_dtype",
        type=DTYPE,
        default="auto",
        show_default=True,
        help="Dtype the model runs in (auto: the checkpoint's own).",
    )(wrapper)
    return click.option(
        "--device",
        type=DEVICE,
        default="auto",
        show_default=True,
        help="auto (every GPU if any, else cpu), cpu, cuda (every GPU), cuda:N.",
    )(wrapper)


# ---- record ---------------------------------------------------------------------------------


def _ray_options(f):
    """--ray [ADDRESS], --workers, --gpus-per-worker (record and sweep)."""
    for option in reversed(
        [
            click.option(
                "--ray",
                "ray_address",
                is_flag=False,
                flag_value="",
                default=None,
                metavar="[ADDRESS]",
                help="Fan out over a Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT, auto, local); "
                "without ADDRESS: RAY_ADDRESS, else the cluster last started here, else a new local one.",
            ),
            click.option("--workers", type=int, default=None, help="Ray workers, each holding one model [default: 2]."),
            click.option("--gpus-per-worker", type=float, default=None, help="GPUs per Ray worker [default: 0, CPU]."),
        ]
    ):
        f = option(f)
    return f


def _cluster(ray_address, workers, gpus_per_worker):
    """ClusterSettings for --ray, None without it (and an error for Ray options without --ray)."""
    from moeprint.cluster import ClusterSettings

    if ray_address is None:
        if workers is not None or gpus_per_worker is not None:
            raise MoeprintError("--workers and --gpus-per-worker need --ray.")
        return None
    return ClusterSettings(ray_address or None, 2 if workers is None else workers, gpus_per_worker or 0.0).check()


@cli.command("record")
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "--prompts",
    "sources",
    multiple=True,
    required=True,
    help="`builtin`, a .jsonl/.csv file, or BENCHMARK[:LOCAL_PATH] (gpqa, mmlu, mmlu_pro, sorry_bench, "
    "tulu3_persona_if, polyglot). Repeat to combine sources.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str), help="Run directory to write."
)
@click.option("--max-new-tokens", default=64, show_default=True, type=int, help="Generation cap per prompt.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Prompts per generate call.")
@click.option("--sample/--greedy", "do_sample", default=False, show_default=True, help="Sampling or greedy decoding.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed (per batch: seed and batch index).")
@click.option("--logits", is_flag=True, help="Also store full router logits (L*E floats per token).")
@click.option("--expert-norms", is_flag=True, help="Also store ||f_j(x)|| of each selected expert (REAP).")
@click.option("--shard", default=None, help="Record only shard I of N (I/N); merge shards with `moeprint merge-runs`.")
@domains_option("Domains to keep (must be known or declared).")
@click.option("--limit", default=None, type=int, help="Record only the first N prompts (after --domains).")
@click.option(
    "--reasoning-effort",
    default=None,
    type=click.Choice(["low", "medium", "high"]),
    help="Passed to the chat template (for templates that read `reasoning_effort`).",
)
@click.option(
    "--date",
    default=None,
    help="Date (YYYY-MM-DD) the chat template writes into prompts (default: a fixed 2025-08-05).",
)
@_load_option_flags
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_ray_options
def record_cmd(
    model,
    sources,
    out_dir,
    max_new_tokens,
    batch_size,
    do_sample,
    seed,
    logits,
    expert_norms,
    shard,
    domains,
    limit,
    reasoning_effort,
    date,
    load,
    quiet,
    ray_address,
    workers,
    gpus_per_worker,
):
    """Generate on prompts and record every token's router decisions into RUN_DIR.

    Prompt and generated tokens are both recorded. A killed run resumes when rerun with the same
    arguments.

    Example: moeprint record models/tiny --prompts builtin --out runs/tiny --max-new-tokens 32

    On a Ray cluster (docs/ray.md): moeprint record models/big-moe --prompts mmlu --out /shared/runs/mmlu
    --ray HEAD:6379 --workers 8 --gpus-per-worker 1
    """
    from moeprint.io.run import open_run
    from moeprint.prompts import TemplateInputs
    from moeprint.record import RecordSettings, record_run

    settings = RecordSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        seed=seed,
        logits=logits,
        expert_norms=expert_norms,
        reasoning_effort=reasoning_effort,
        dtype=load.dtype,
        template=TemplateInputs(date) if date is not None else TemplateInputs(),
    )
    path = record_run(
        model,
        list(sources),
        out_dir,
        settings,
        domains=domains,
        limit=limit,
        shard=shard,
        device=load.device,
        progress=not quiet,
        cluster=_cluster(ray_address, workers, gpus_per_worker),
    )
    m = open_run(path).manifest()
    click.echo(f"recorded {m.n_prompts} prompts, {m.n_tokens} tokens -> {path}")


@cli.command("merge-runs")
@click.argument("shard_runs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str), help="Merged run directory."
)
def merge_runs_cmd(shard_runs, out_dir):
    """Merge the runs of `moeprint record --shard I/N` into one run.

    Example: moeprint merge-runs runs/part0 runs/part1 --out runs/full
    """
    from moeprint.io.run import open_run
    from moeprint.record import merge_runs

    path = merge_runs(list(shard_runs), out_dir)
    m = open_run(path).manifest()
    click.echo(f"merged {len(shard_runs)} shards: {m.n_prompts} prompts, {m.n_tokens} tokens -> {path}")


# ---- testbed and demo -----------------------------------------------------------------------


@cli.group()
def testbed() -> None:
    """The testbed: a small MoE model trained here on domain-labelled text (see docs/testbed.md)."""


@testbed.command("path")
def testbed_path_cmd() -> None:
    """Print the folder of the committed testbed model.

    Example: moeprint testbed path
    """
    from moeprint.testbed import testbed_path

    click.echo(str(testbed_path()))


@testbed.command("corpus")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Corpus folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing corpus folder.")
def testbed_corpus_cmd(out: str, overwrite: bool) -> None:
    """Extract the domain-labelled corpus from installed Debian packages and the Python stdlib.

    Needs: apt-get install dict-gcide manpages-fr manpages-de wordnet-base.

    Example: moeprint testbed corpus --out corpus/
    """
    from moeprint.testbed.corpus import build_corpus

    path = build_corpus(out, overwrite=overwrite)
    click.echo(f"corpus written to {path} (manifest: {path / 'manifest.json'})")


@testbed.command("train")
@click.option(
    "--corpus",
    "corpus",
    type=click.Path(file_okay=False),
    help="Corpus from `moeprint testbed corpus` (default with --miniature: the committed texts).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    help="Model folder (default: the packaged testbed, which --miniature never overwrites).",
)
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (default: the committed recipe's).")
@click.option("--seed", type=int, help="Random seed (default: the committed recipe's).")
@click.option("--miniature", is_flag=True, help="A one-minute model (2 layers, 8 experts) on the committed texts.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
def testbed_train_cmd(corpus, out, steps, seed, miniature, overwrite) -> None:
    """Train the testbed model (CPU, fixed seed); writes weights, tokenizer, plots and training_manifest.json.

    Example: moeprint testbed train --corpus corpus/ --out testbed-model/
    """
    from moeprint.testbed.cli_support import run_train

    model_dir, manifest = run_train(corpus, out, steps, seed, miniature, overwrite)
    click.echo(f"model written to {model_dir}")
    for domain, ppl in manifest["heldout_perplexity"].items():
        unigram = manifest["unigram_perplexity"][domain]
        click.echo(f"  {domain:20s} held-out perplexity {ppl:8.1f}  (unigram {unigram:.1f})")


@testbed.command("fitness")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Also write the numbers as JSON here.")
@click.option(
    "--test-tokens", default=2048, show_default=True, type=click.IntRange(min=256), help="Test tokens per domain."
)
def testbed_fitness_cmd(out, test_tokens) -> None:
    """Measure the committed testbed: perplexity, expert loads, usage vs untrained, cross-domain masking.

    Example: moeprint testbed fitness --out fitness.json
    """
    from moeprint.testbed.cli_support import run_fitness

    table = run_fitness(out, test_tokens)
    click.echo(table)
    if out:
        click.echo(f"numbers written to {out}")


@cli.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for everything the demo writes (must be absent or empty).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(out_dir: str, quiet: bool) -> None:
    """Run the whole pipeline offline on the built-in testbed and print where everything went.

    Records the testbed's calibration texts (routing of every token, expert output norms), analyzes
    them, plans and prunes a code specialist (8 of 32 experts), evaluates it on held-out test texts,
    sweeps every domain x {16, 8} experts x 3 criteria against random selections, and builds the site.

    Example: moeprint demo --out demo-out
    """
    import time

    from rich.console import Console
    from rich.table import Table

    from moeprint.demo import run_demo

    started = time.perf_counter()
    where = run_demo(out_dir, progress=not quiet)
    table = Table(title=f"moeprint demo: done in {time.perf_counter() - started:.0f} s")
    table.add_column("result")
    table.add_column("where", overflow="fold")  # full paths: they are the point of the table
    for what, path in where.items():
        table.add_row(what, str(path))
    Console().print(table)


# ---- import and analyze ---------------------------------------------------------------------


@cli.command("import-fingerprinting")
@click.argument("src", type=click.Path(path_type=str))
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=str), help="Run directory to create."
)
@click.option(
    "--domains-map",
    type=click.Path(path_type=str),
    default=None,
    help="JSON {domain: ['dataset/category', ...]} (default: SRC/domains.json).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
def import_fingerprinting_cmd(src: str, out: str, domains_map: str | None, overwrite: bool) -> None:
    """Import the published expert-fingerprinting traces and summaries as a run directory.

    Example: moeprint import-fingerprinting ../shared/data/expert-fingerprinting --out runs/published
    """
    from moeprint.importers import import_fingerprinting

    manifest = import_fingerprinting(src, out, domains_map, overwrite=overwrite)
    source = manifest.source
    if source.missing_examples or source.missing_summaries:
        click.echo(
            f"warning: {source.missing_examples} example file(s) and {source.missing_summaries} "
            f"summary file(s) named in map.json are absent; skipped.",
            err=True,
        )
    click.echo(
        f"imported {manifest.n_prompts} prompts, {manifest.n_tokens} routed tokens "
        f"({len(manifest.domains)} domains) -> {out}"
    )


@cli.command("analyze")
@click.argument("run_dir", type=click.Path(path_type=str))
@domains_option("Domains to rank and test (default all).")
@click.option(
    "--segment",
    default=ALL,
    show_default=True,
    type=SEGMENT,
    help="Tokens the rankings and statistics use (generated = think + answer + other generated).",
)
@names_option(
    "--criteria",
    "--criterion",
    "criteria",
    help="Criteria to rank by, comma-separated or repeated (default: all that the run supports).",
)
@click.option("--top-n", type=int, default=None, help="Kept-set size for overlap and stability (default E/2).")
@count_option("--permutations", minimum=1, default=999, help="Prompt-label permutations.")
@count_option("--bootstrap", minimum=2, default=200, help="Bootstrap resamples of prompts.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-stats", is_flag=True, help="Only fingerprints and rankings.")
@click.option("--plots", is_flag=True, help="Also draw fingerprints/plots/specialisation.{png,svg}.")
@click.option("--no-coactivation", is_flag=True, help="Skip pair counts (3x faster; coactivation.parquet stays empty).")
def analyze_cmd(
    run_dir: str,
    domains: list[str] | None,
    segment: str,
    criteria: list[str] | None,
    top_n: int | None,
    permutations: int,
    bootstrap: int,
    seed: int,
    no_stats: bool,
    plots: bool,
    no_coactivation: bool,
) -> None:
    """Fingerprint a run: usage sums, co-activation, rankings per criterion, statistics.

    Example: moeprint analyze runs/published --segment generated --criteria frequency,reference
    """
    from moeprint.analyze import AnalyzeSettings, analyze_run

    settings = AnalyzeSettings(
        domains=tuple(domains) if domains else None,
        segment=segment,
        criteria=tuple(criteria) if criteria else None,
        top_n=top_n,
        n_perm=permutations,
        n_boot=bootstrap,
        seed=seed,
        with_stats=not no_stats,
        plots=plots,
        coactivation=not no_coactivation,
    )
    out = analyze_run(run_dir, settings)
    click.echo(f"fingerprints -> {out}")


@cli.command("export-rankings")
@click.argument("run_dir", type=click.Path(path_type=str))
@click.option("--criterion", required=True, help="Criterion to rank by (e.g. reference, frequency, lift).")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=str), help="Directory for <domain>.json."
)
@domains_option("Domains to export (default: those analyzed).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["published", "llmcompressor"]),
    default="published",
    show_default=True,
    help='published: {"layer_0": [ids best first]}; llmcompressor: the saliency '
    'report its ExpertPruner reads ({"saliency": [[per expert] per layer], "count": ...}).',
)
def export_rankings_cmd(run_dir: str, criterion: str, out: str, domains: list[str] | None, fmt: str) -> None:
    """Write OUT/<domain>.json for any criterion: published rankings or an llm-compressor saliency report.

    Example: moeprint export-rankings runs/published --criterion reference --out topical_analytics

    Example: moeprint export-rankings runs/r1 --criterion reap --format llmcompressor --out reports
    """
    from moeprint.analyze import export_rankings

    written = export_rankings(run_dir, criterion, out, domains or None, fmt=fmt)
    click.echo(f"{len(written)} ranking files -> {out}")


@cli.command("classify")
@click.argument("train_run", type=click.Path(path_type=str))
@click.option(
    "--apply",
    "apply_run",
    type=click.Path(path_type=str),
    default=None,
    help="Another run to predict with the trained classifier.",
)
@click.option(
    "--segment",
    default="generated",
    show_default=True,
    type=SEGMENT,
)
@click.option("--window", type=int, default=None, help="Classify windows of N token positions instead of prompts.")
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--l2", type=float, default=1.0, show_default=True, help="L2 penalty of the logistic regression.")
@click.option(
    "--group-by",
    type=click.Choice(["prompt", "folder"]),
    default="prompt",
    show_default=True,
    help="CV keeps each group on one side (folder = dataset/category of imported prompt ids).",
)
@click.option(
    "--token-baseline",
    type=int,
    default=1000,
    show_default=True,
    help="Also cross-validate on the counts of the N most frequent tokens (0 = skip): the token-mix control.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Directory for report.json and model.json (default TRAIN_RUN/classify).",
)
def classify_cmd(
    train_run: str,
    apply_run: str | None,
    segment: str,
    window: int | None,
    folds: int,
    l2: float,
    group_by: str,
    token_baseline: int,
    out: str | None,
) -> None:
    """Predict a prompt's domain from its per-layer expert usage; report cross-validated accuracy.

    Example: moeprint classify runs/published --window 64 --apply runs/mine
    """
    from moeprint.analyze.classify_run import classify_runs

    report = classify_runs(
        train_run, apply_run, segment, window, folds, l2, out=out, group_by=group_by, token_baseline=token_baseline
    )
    cv = report["cross_validation"]
    click.echo(
        f"{cv['n_folds']}-fold CV on {cv['n_samples']} samples ({cv['n_groups']} {group_by} groups): accuracy "
        f"{cv['accuracy']:.3f} (majority {cv['majority_baseline_accuracy']:.3f}, "
        f"nearest-centroid {cv['nearest_centroid_accuracy']:.3f})"
    )
    if "token_mix_baseline" in report:
        click.echo(
            f"token-mix control (same folds, token counts only): accuracy "
            f"{report['token_mix_baseline']['accuracy']:.3f}"
        )
    if "applied" in report and report["applied"]["accuracy_on_known_domains"] is not None:
        click.echo(f"applied to {apply_run}: accuracy {report['applied']['accuracy_on_known_domains']:.3f}")
    click.echo(f"report -> {report['out_dir']}/report.json")


# ---- plan, prune, factory, mask -------------------------------------------------------------

_router_rows_option = click.option(
    "--router-rows",
    "router_rows",
    type=click.Path(dir_okay=False),
    default=None,
    help="Healed router rows (moeprint heal) to apply; default: the file a healed plan names.",
)


def _card_option_flags(f):
    """Options shared by `prune` and `factory` that shape the README.md model card."""
    for decorator in reversed(
        [
            click.option(
                "--base-model-id", default=None, help="Hub id of the base model for the card (e.g. org/base-model)."
            ),
            click.option("--license", "license_", default="apache-2.0", show_default=True, help="Card licence."),
            click.option(
                "--dataset", "datasets", multiple=True, help="Hub id of a dataset behind the selection (repeatable)."
            ),
            click.option(
                "--eval",
                "eval_path",
                type=click.Path(dir_okay=False),
                default=None,
                help="Evaluation JSON whose numbers go into the card's retention table.",
            ),
            click.option(
                "--examples", is_flag=True, help="Add greedy generations of the pruned model (CPU, small models only)."
            ),
            click.option(
                "--example-prompt", "example_prompts", multiple=True, help="Prompt for --examples (repeatable)."
            ),
            click.option("--no-card", is_flag=True, help="Write no README.md."),
            click.option(
                "--example-device", type=DEVICE, default="auto", show_default=True, help="--device of --examples."
            ),
            click.option(
                "--example-dtype", type=DTYPE, default="auto", show_default=True, help="--dtype of --examples."
            ),
        ]
    ):
        f = decorator(f)
    return f


def _heal_option_flags(f):
    """`prune --heal` / `factory --heal`: heal each plan before writing it (the command receives `heal_options`)."""

    @functools.wraps(f)
    def wrapper(*args, heal, heal_run, heal_texts, heal_steps, heal_tokens, heal_lr, heal_seed, heal_device, **kwargs):
        options = dict(objective=heal, run_dir=heal_run, texts_path=heal_texts, steps=heal_steps)
        options.update(token_budget=heal_tokens, lr=heal_lr, seed=heal_seed)
        options["load"] = LoadSettings(heal_device, kwargs.pop("heal_dtype"))
        return f(*args, heal_options=options if heal else None, **kwargs)

    for decorator in [
        click.option("--heal-dtype", type=DTYPE, default="auto", show_default=True, help="--dtype of --heal's model."),
        click.option("--heal-device", type=DEVICE, default="auto", show_default=True, help="--device of --heal."),
        click.option("--heal-seed", default=0, show_default=True, type=int, help="Seed of --heal."),
        click.option(
            "--heal-lr", default=None, type=float, help="Adam learning rate of --heal (default per objective)."
        ),
        click.option("--heal-tokens", default=4096, show_default=True, type=int, help="Calibration tokens of --heal."),
        click.option("--heal-steps", default=200, show_default=True, type=int, help="Most steps of --heal."),
        click.option(
            "--heal-texts", type=click.Path(dir_okay=False), help="Calibration of --heal: a JSONL of {text[, domain]}."
        ),
        click.option(
            "--heal-run",
            type=click.Path(file_okay=False),
            help="Calibration of --heal: this run's recorded prompts (factory default: RUN_DIR).",
        ),
        click.option(
            "--heal",
            type=click.Choice(["e2e", "local", "bias"]),
            default=None,
            help="Heal each cut's router rows first (moeprint heal); the checkpoint holds the healed rows.",
        ),
    ]:
        wrapper = decorator(wrapper)
    return wrapper


def _healer(model, heal_options, default_run=None):
    """The Healer of `--heal` options (None without --heal); every setting checked before anything runs."""
    if heal_options is None:
        return None
    from moeprint.evaluate.heal import HealSettings
    from moeprint.evaluate.heal_plan import Healer

    o = dict(heal_options)
    run_dir, texts_path, load = o.pop("run_dir"), o.pop("texts_path"), o.pop("load")
    if run_dir is None and texts_path is None:
        run_dir = default_run
    if (run_dir is None) == (texts_path is None):
        raise MoeprintError("--heal needs exactly one calibration source: --heal-run RUN_DIR or --heal-texts FILE.")
    return Healer(model, HealSettings(**o), run_dir=run_dir, texts_path=texts_path, load=load)


def _card_options(
    base_model_id, license_, datasets, eval_path, examples, example_prompts, no_card, example_device, example_dtype
):
    from moeprint.evaluate.results import card_retention
    from moeprint.prune.card import DEFAULT_EXAMPLE_PROMPTS, CardOptions

    if no_card:
        return None
    prompts = tuple(example_prompts) or (DEFAULT_EXAMPLE_PROMPTS if examples else ())
    return CardOptions(
        base_model_id=base_model_id,
        license=license_,
        datasets=tuple(datasets),
        retention=card_retention(eval_path) if eval_path is not None else None,
        example_prompts=prompts,
        load=LoadSettings(example_device, example_dtype),
    )


@cli.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--domain", default=None, help="Domain whose ranking to use (default with --ranking: the file's name).")
@click.option(
    "--experts",
    "n_experts",
    type=int,
    default=None,
    help="Experts to keep per layer (required, except with a report of kept experts).",
)
@click.option("--criterion", default=None, help="Ranking criterion of the run's fingerprints.")
@click.option(
    "--ranking",
    type=click.Path(dir_okay=False),
    default=None,
    help='A published-format ranking file ({"layer_0": [ids best first], ...}) instead of a run.',
)
@click.option(
    "--from-llmcompressor",
    "llmc_report",
    type=click.Path(dir_okay=False),
    default=None,
    help="An llm-compressor REAP report (kept experts from report_path, or a saliency report) instead of a run.",
)
@click.option(
    "--model",
    type=click.Path(file_okay=False),
    default=None,
    help="Model folder (with --ranking or --from-llmcompressor).",
)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Plan JSON to write.")
def plan(run_dir, domain, n_experts, criterion, ranking, llmc_report, model, out_path):
    """Make a validated prune plan: the N best experts of every layer for one domain.

    Example: moeprint plan runs/r1 --domain law --experts 8 --criterion frequency --out law-8.json

    Example: moeprint plan --ranking topical_analytics/law.json --model models/base --experts 8 --out law-8.json

    Example: moeprint plan --from-llmcompressor reap_report.json --model models/base --out reap.json
    """
    from moeprint.select.plan import save_plan
    from moeprint.select.sources import PlanSource, build_plan

    source = PlanSource(
        run_dir=run_dir, ranking=ranking, llmcompressor=llmc_report, model=model, domain=domain, criterion=criterion
    )
    result = build_plan(source, n_experts)
    save_plan(result, out_path)
    click.echo(
        f"plan: {result.domain}, {result.n_experts} experts x {result.num_layers} layers "
        f"({result.criterion}) -> {out_path}"
    )


@cli.command()
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), required=True, help="Plan JSON (moeprint plan).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output model folder.")
@click.option(
    "--dtype",
    type=click.Choice(["keep", "bf16"]),
    default="keep",
    show_default=True,
    help="keep: same format as the input (quantised experts stay quantised); bf16: dequantise / cast to bfloat16.",
)
@click.option("--shard-size", default="5GB", show_default=True, help="Largest output shard.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@_router_rows_option
@_heal_option_flags
@_card_option_flags
def prune(model, plan_path, out_dir, dtype, shard_size, overwrite, router_rows, heal_options, **card):
    """Write a smaller checkpoint that keeps only the plan's experts (streams shard by shard).

    A healed plan (`moeprint heal`) writes its retrained router rows in place of the kept ones; `--heal`
    heals the plan first (the model on --heal-device in --heal-dtype) and writes the healed checkpoint.

    Example: moeprint prune models/base --plan law-8.json --out checkpoints/base-law-8
    """
    from moeprint.io.shards import parse_size
    from moeprint.prune import build_checkpoint

    plan, healed = _plan_and_rows(model, plan_path, router_rows)
    rows = healed.rows if healed else None
    healer = _healer(model, heal_options)
    card_options, size = _card_options(**card), parse_size(shard_size)
    if healer is not None:
        from moeprint.io.outputs import check_replaceable

        if healed is not None:
            raise MoeprintError("--heal heals an unhealed plan; this plan already has healed router rows.")
        healer.check(plan)
        check_replaceable(Path(out_dir), "checkpoint", overwrite)  # before healing, not after
        plan, rows, _ = healer.heal(plan)
    result = build_checkpoint(
        model,
        plan,
        out_dir,
        dtype=dtype,
        shard_size=size,
        card=card_options,
        overwrite=overwrite,
        router_rows=rows,
    )
    click.echo(
        f"pruned: {result.n_parameters:,} parameters, {result.n_bytes / 1e9:.3f} GB in "
        f"{result.n_shards} shard(s) -> {result.out_dir}"
    )


@cli.command()
@click.argument("model", type=click.Path(file_okay=False))
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@domains_option("Domains to cut (default: every ranked domain).")
@sizes_option(default="4-32", show_default=True)
@click.option("--criterion", default=None, help="Ranking criterion of the run's fingerprints.")
@click.option(
    "--rankings-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A folder of published-format <domain>.json rankings instead of RUN_DIR.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder for all outputs.")
@click.option("--dtype", type=click.Choice(["keep", "bf16"]), default="keep", show_default=True)
@click.option("--shard-size", default="5GB", show_default=True)
@click.option(
    "--name-pattern", default=None, help="Output names; fields {family} {size} {domain} {n} {criterion} {params}."
)
@_heal_option_flags
@_card_option_flags
def factory(
    model,
    run_dir,
    domains,
    sizes,
    criterion,
    rankings_dir,
    out_dir,
    dtype,
    shard_size,
    name_pattern,
    heal_options,
    **card,
):
    """Prune every domain x size (8 domains x sizes 4-32 = 232 cuts); reruns skip finished outputs.

    --heal heals every cut first (calibration: --heal-run, default RUN_DIR, or --heal-texts).

    Example: moeprint factory models/base --rankings-dir topical_analytics --sizes 4-32 --out checkpoints
    """
    from rich.console import Console
    from rich.table import Table

    from moeprint.io.shards import parse_size
    from moeprint.prune import DEFAULT_NAME_PATTERN, FactoryStatus, run_factory

    rows = run_factory(
        model,
        out_dir,
        sizes=sizes,
        run_dir=run_dir,
        rankings_dir=rankings_dir,
        domains=domains or None,
        criterion=criterion,
        dtype=dtype,
        shard_size=parse_size(shard_size),
        name_pattern=name_pattern or DEFAULT_NAME_PATTERN,
        card=_card_options(**card),
        heal=_healer(model, heal_options, default_run=run_dir),
    )
    table = Table(title=f"{len(rows)} checkpoints in {out_dir}")
    for column in ("name", "domain", "experts", "parameters", "GB", "status"):
        table.add_column(column, justify="right" if column in ("experts", "parameters", "GB") else "left")
    for r in rows:
        table.add_row(r.name, r.domain, str(r.n_experts), f"{r.n_parameters:,}", f"{r.size_gb:.3f}", r.status.value)
    Console().print(table)
    written = sum(r.status is FactoryStatus.WRITTEN for r in rows)
    click.echo(
        f"factory: {written} written, {len(rows) - written} already complete -> {out_dir} (summary.csv, summary.json)"
    )


@cli.command("publish")
@click.argument("checkpoints_dir", type=click.Path(file_okay=False))
@click.option("--namespace", required=True, help="Hub user or organisation to publish under.")
@click.option("--private", is_flag=True, help="Create private repos and collections.")
@click.option(
    "--collections",
    "with_collections",
    is_flag=True,
    help="Also arrange collections: one of everything plus one per domain, items ordered by size.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the full plan as JSON (repos, files, collections) and change nothing."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def publish_cmd(checkpoints_dir, namespace, private, with_collections, dry_run, quiet):
    """Upload every checkpoint folder to its own hub repo (named after the folder); reruns upload only changes.

    Example: moeprint publish checkpoints --namespace my-org --collections --dry-run > plan.json
    """
    import json

    from moeprint.publish import plan_publish, publish

    plan = plan_publish(checkpoints_dir, namespace, private=private, collections=with_collections)
    flagged = [r for r in plan.repos if r.warnings]
    if flagged:
        click.echo(
            f"warning: {len(flagged)} checkpoint(s) carry local paths that will be public, e.g. "
            f"{flagged[0].repo_id}: {flagged[0].warnings[0]}",
            err=True,
        )
    if dry_run:
        click.echo(json.dumps(plan.to_json(), indent=1))
        return
    report = publish(plan, progress=not quiet)
    sent = sum(len(files) for files in report.uploaded.values())
    click.echo(
        f"published {len(plan.repos)} repos under {namespace}: {len(report.uploaded)} updated ({sent} files), "
        f"{len(report.unchanged_repos)} unchanged; {len(report.collections)} collections "
        f"({report.added_items} items added, {report.updated_items} updated); {report.retries} retries"
    )


@cli.command()
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), required=True, help="Plan JSON (moeprint plan).")
@click.option("--prompt", required=True, help="Prompt to complete with the masked model.")
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=32, show_default=True)
@_load_option_flags
@_router_rows_option
def mask(model, plan_path, prompt, max_new_tokens, load, router_rows):
    """Try a plan without writing a checkpoint: load MODEL with dropped experts masked out and generate.

    Example: moeprint mask models/base --plan law-8.json --prompt "What is a tort?"
    """
    from moeprint.prune import masked_generate

    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in prompt):
        raise MoeprintError("--prompt holds control characters (other than tab and newline); remove them.")
    plan, healed = _plan_and_rows(model, plan_path, router_rows)
    click.echo(
        masked_generate(model, plan, prompt, max_new_tokens, load, router_rows=list(healed.rows) if healed else None)
    )


def _plan_and_rows(model, plan_path, rows_path):
    """The plan (validated against MODEL) and its healed rows, if it has any (all before weights load)."""
    from moeprint.adapters import load_config_dict
    from moeprint.evaluate.cut import read_plan
    from moeprint.prune.rows import rows_for_plan, with_heal_record

    config = load_config_dict(model)
    plan = read_plan(plan_path, config)
    healed = rows_for_plan(plan, plan_path, rows_path, config)
    return with_heal_record(plan, healed), healed


# ---- evaluate and sweep ---------------------------------------------------------------------


@cli.command("evaluate")
@click.argument("model", type=click.Path())
@click.option("--plan", "plan_path", type=click.Path(), help="Prune plan JSON, evaluated as a router mask on MODEL.")
@click.option("--checkpoint", type=click.Path(), help="A pruned checkpoint folder of MODEL, loaded directly.")
@click.option(
    "--texts", "texts_path", required=True, type=click.Path(), help="Held-out texts, JSONL rows {text, domain[, id]}."
)
@click.option("--mc", "mc_path", type=click.Path(), help="Multiple-choice JSONL (MMLU or GPQA shape).")
@click.option(
    "--prompts",
    "prompts_path",
    help="Generation prompts: a .jsonl/.csv file ({text|messages, domain[, id]}), `builtin` or a benchmark.",
)
@click.option("--lm-eval", "lm_eval_tasks", help="lm-eval tasks: names or task YAML paths, comma-separated.")
@count_option("--lm-eval-limit", minimum=1, help="At most this many documents per lm-eval task.")
@max_tokens_option()
@count_option("--max-new-tokens", minimum=1, default=64, help="Generation cap per prompt.")
@count_option("--draft-tokens", minimum=1, default=4, help="Draft tokens per round as a speculative draft.")
@click.option("--no-speculative", is_flag=True, help="Skip the speculative-decoding measurement.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Result JSON to write.")
@_load_option_flags
@_router_rows_option
def evaluate_command(
    model,
    plan_path,
    checkpoint,
    texts_path,
    mc_path,
    prompts_path,
    lm_eval_tasks,
    lm_eval_limit,
    max_tokens,
    max_new_tokens,
    draft_tokens,
    no_speculative,
    out,
    load,
    router_rows,
):
    """Compare a cut (plan or checkpoint) with its base MODEL on the same inputs.

    Reports per-domain perplexity, mean token KL(base || cut), top-1 agreement, multiple-choice
    accuracy, generation health and speculative-draft acceptance, in-domain beside off-domain.

    Example: moeprint evaluate models/testbed --plan runs/tb/plans/law-reap-16.json --texts heldout.jsonl --out law16.json
    """
    from moeprint.evaluate import EvalSettings, evaluate

    settings = EvalSettings(
        max_tokens=max_tokens,
        max_new_tokens=max_new_tokens,
        draft_tokens=draft_tokens,
        speculative=not no_speculative,
        lm_eval_limit=lm_eval_limit,
    )
    path = evaluate(
        model,
        plan_path=plan_path,
        checkpoint=checkpoint,
        texts_path=texts_path,
        mc_path=mc_path,
        prompts_path=prompts_path,
        lm_eval_tasks=lm_eval_tasks,
        out=out,
        settings=settings,
        load=load,
        router_rows=router_rows,
    )
    click.echo(f"wrote {path}")


@cli.command("sweep")
@click.argument("run_dir", type=click.Path())
@click.option("--model", "model_path", type=click.Path(), help="Base model folder (default: the run's model).")
@click.option(
    "--texts",
    "texts_path",
    required=True,
    type=click.Path(),
    help="Held-out texts, JSONL rows {text, domain[, id]}, disjoint from the run's prompts.",
)
@click.option("--mc", "mc_path", type=click.Path(), help="Multiple-choice JSONL (MMLU or GPQA shape).")
@domains_option("Domains to select for.", required=True)
@sizes_option(required=True)
@names_option("--criteria", default="frequency", help="Ranking criteria, comma-separated or repeated.")
@count_option("--random-seeds", minimum=0, default=5, help="Random selections per size (the floor).")
@max_tokens_option()
@click.option(
    "--unverified-calibration",
    is_flag=True,
    help="Sweep even if the run records no prompt texts to check disjointness against.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Output folder (results.json/.csv, plots)."
)
@click.option(
    "--router-rows",
    "router_rows",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Also score this healed cut (a rows file of `moeprint heal`; repeatable).",
)
@_ray_options
@_load_option_flags
def sweep_command(
    run_dir,
    model_path,
    texts_path,
    mc_path,
    domains,
    sizes,
    criteria,
    random_seeds,
    max_tokens,
    unverified_calibration,
    overwrite,
    out,
    load,
    ray_address,
    workers,
    gpus_per_worker,
    router_rows,
):
    """Evaluate every domain x size x criterion plus random selections, from one loaded base model.

    Rankings come from `moeprint analyze` (run it first): its ranking files, or any of its criteria
    computed from the run's fingerprints. Refuses evaluation texts that occur in the run's calibration prompts.

    Example: moeprint sweep runs/tb --texts heldout.jsonl --domains law,math --sizes 25%,50% --criteria frequency,reap --out runs/tb/evals/sweep

    With --ray the cuts are spread over Ray workers (docs/ray.md); the results are the same.
    """
    from moeprint.evaluate.sweep import SweepInputs, SweepSpec, sweep

    spec = SweepSpec(
        domains=domains or [],
        sizes=sizes,
        criteria=criteria or [],
        random_seeds=random_seeds,
        max_tokens=max_tokens,
        allow_unverified=unverified_calibration,
        router_rows=list(router_rows),
    )
    path = sweep(
        SweepInputs(run_dir, texts_path, model_path, mc_path),
        spec,
        out,
        overwrite=overwrite,
        load=load,
        cluster=_cluster(ray_address, workers, gpus_per_worker),
    )
    click.echo(f"wrote {path}/results.json, results.csv, retention.png/svg, kl.png/svg")


@cli.command("heal")
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), required=True, help="Plan JSON to heal.")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    help="Calibration: this run's recorded prompts of the plan's domain.",
)
@click.option(
    "--texts",
    "texts_path",
    type=click.Path(dir_okay=False),
    help="Calibration: a JSONL file of {text[, domain]} rows (never your evaluation texts).",
)
@click.option("--domain", default=None, help="Calibration domain (default: the plan's).")
@click.option(
    "--objective",
    type=click.Choice(["e2e", "local", "bias"]),
    default="e2e",
    show_default=True,
    help="e2e: KL(base || cut) through the whole model; local: each layer's MoE output; bias: biases only.",
)
@click.option("--steps", default=200, show_default=True, type=int, help="Most optimiser steps (per layer for local).")
@click.option("--lr", default=None, type=float, help="Adam learning rate (default: 2e-3; 1e-2 for bias).")
@click.option("--tokens", default=4096, show_default=True, type=int, help="Calibration tokens (fit + held back).")
@click.option("--holdout", default=0.25, show_default=True, type=float, help="Share held back for early stopping.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Healed plan JSON to write; its rows go beside it (NAME.router_rows.safetensors).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing healed plan and rows file.")
@_load_option_flags
def heal_command(
    model, plan_path, run_dir, texts_path, domain, objective, steps, lr, tokens, holdout, seed, out, overwrite, load
):
    """Refit only the kept experts' router rows so the cut imitates its base (experts stay bit-identical).

    Writes a healed plan; `prune`, `evaluate` and `mask` apply its rows, `sweep --router-rows` scores them.
    The model runs on --device in --dtype; the rows and the optimiser stay float32 (cast in the mask).

    Example: moeprint heal models/testbed --plan runs/tb/plans/law-reap-16.json --run runs/tb --out law-16-healed.json
    """
    from moeprint.evaluate.heal import HealSettings
    from moeprint.evaluate.heal_plan import heal_plan

    settings = HealSettings(
        objective=objective, steps=steps, lr=lr, seed=seed, token_budget=tokens, holdout=holdout
    ).validate()
    done = heal_plan(
        model,
        plan_path,
        out,
        settings,
        run_dir=run_dir,
        texts_path=texts_path,
        domain=domain,
        overwrite=overwrite,
        load=load,
    )
    r = done.result
    click.echo(
        f"healed ({objective}, {r.steps} steps, {r.seconds:.0f} s): held-back KL {r.kl_before:.4f} -> "
        f"{r.kl_after:.4f}; wrote {done.plan_path} and {done.rows_path}"
    )


@cli.command("greedy-plan")
@click.argument("run_dir", type=click.Path())
@click.option("--model", "model_path", type=click.Path(), help="Base model folder (default: the run's model).")
@click.option("--domain", required=True, help="Domain whose recorded prompts are the calibration texts.")
@click.option("--experts", "n_experts", required=True, type=int, help="Experts kept per layer.")
@click.option(
    "--from", "start", default="reap-sum", show_default=True, help="Criterion whose ranking starts the search."
)
@count_option("--tokens", minimum=2, default=1024, help="Calibration tokens per masked forward pass.")
@count_option("--candidates", minimum=1, default=3, help="Lowest-ranked remaining experts tried per layer and round.")
@count_option(
    "--validation-tokens",
    minimum=0,
    default=0,
    help="Hold back every other recorded prompt; choose between the greedy set and the ranking's top-N on "
    "this many of their tokens (0: on the search tokens).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Prune plan JSON to write.")
@_load_option_flags
def greedy_plan_command(
    run_dir, model_path, domain, n_experts, start, tokens, candidates, validation_tokens, out, load
):
    """Choose the kept experts by calibration loss (criterion `greedy-loss`), model in the loop.

    Starts from a fingerprint ranking and drops, layer by layer, the candidate whose removal (as a router
    mask) raises the loss on the domain's recorded prompts least; never worse on them than the ranking's top-N.

    Example: moeprint greedy-plan runs/tb --domain law --experts 16 --from reap-sum --out runs/tb/plans/law-greedy-16.json
    """
    from moeprint.evaluate.greedy_plan import greedy_plan
    from moeprint.progress import Progress
    from moeprint.select.plan import save_plan

    with Progress() as progress:
        plan, sel = greedy_plan(
            run_dir,
            domain,
            n_experts,
            model_path=model_path,
            start=start,
            token_budget=tokens,
            candidates=candidates,
            progress=progress,
            load=load,
            validation_tokens=validation_tokens,
        )
    save_plan(plan, out)
    click.echo(
        f"wrote {out}: {'validation' if validation_tokens else 'calibration'} loss {sel.loss[n_experts]:.4f} "
        f"({start} top-{n_experts}: "
        f"{sel.initial_loss[n_experts]:.4f}), {sel.forward_passes} masked forward passes"
    )


# ---- site -----------------------------------------------------------------------------------


@cli.command("site")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Output directory (default: RUN_DIR/site). Replaced atomically.",
)
@click.option(
    "--compare",
    "compare",
    multiple=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Another run of the same model to offer in the comparison page (repeatable).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open index.html in the default browser when done.")
def site_cmd(run_dir: str, out: str | None, compare: tuple[str, ...], open_browser: bool) -> None:
    """Build the offline explorer + comparison site (static HTML, no network) of a run.

    Example: moeprint site runs/base --out /tmp/site --open
    """
    from moeprint.report import build_site

    path = build_site(run_dir, out, compare)
    index = path.resolve() / "index.html"
    click.echo(f"site written to {path}/ (open {index.as_uri()})")
    if open_browser:
        import webbrowser

        webbrowser.open(index.as_uri())


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="moeprint", standalone_mode=False)
    except MoeprintError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:  # the machine, not moeprint: a full disk, a name the filesystem refuses, permissions
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}.", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted.", err=True)
        sys.exit(130)
