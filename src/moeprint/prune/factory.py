"""Named, carded checkpoints: one (`build_checkpoint`) or every domain x size (`run_factory`).

The factory builds and validates every plan before writing anything, names each output from its
parameter count (computed from headers), skips outputs that are already complete (so an interrupted
factory resumes), and writes summary.csv / summary.json at the end.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from moeprint.adapters import adapter_for, load_config_dict
from moeprint.analyze.fingerprints import ranked_criteria, ranked_domains
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_json, atomic_write_text, json_exists, read_json
from moeprint.io.identity import model_sha256
from moeprint.io.names import check_domain
from moeprint.io.outputs import OutputLock
from moeprint.io.run import RunDir
from moeprint.io.shards import INDEX_NAME, list_tensors
from moeprint.progress import bar
from moeprint.prune.card import MAX_EXAMPLE_PARAMS, CardOptions, build_card, generate_examples, weight_format
from moeprint.prune.naming import DEFAULT_NAME_PATTERN, count_parameters, family_name, model_name
from moeprint.prune.surgery import PLAN_FILE, PruneResult, model_output_specs, prune_checkpoint, read_checkpoint_record
from moeprint.record.store import model_fingerprint
from moeprint.select.plan import model_signature
from moeprint.select.sizes import Sizes, resolve_sizes
from moeprint.select.sources import PlanSource, build_plan
from moeprint.types import ALL, PrunePlan


class FactoryStatus(StrEnum):
    """What the factory did with one output (written as its value in summary.csv / summary.json)."""

    WRITTEN = "written"
    SKIPPED = "skipped (complete)"


@dataclass(frozen=True)
class FactoryRow:
    name: str
    domain: str
    n_experts: int
    n_parameters: int
    size_gb: float
    status: FactoryStatus
    path: str


def build_checkpoint(
    model_dir: str | Path,
    plan: PrunePlan,
    out_dir: str | Path,
    *,
    dtype: str = "keep",
    shard_size: int = 5 * 10**9,
    card: CardOptions | None = CardOptions(),
    overwrite: bool = False,
    progress: bool = True,
    router_rows=None,
) -> PruneResult:
    """Prune `model_dir` by `plan` into `out_dir` with a README.md model card (all inside one atomic rename).
    `router_rows`: the healed rows of a healed plan (moeprint.prune.rows), written in place of the kept rows."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = load_config_dict(model_dir)
    family = family_name(adapter_for(config).model_type)
    if card is not None and card.example_prompts:
        n_params = planned_parameters(model_dir, plan, dtype)
        if n_params > MAX_EXAMPLE_PARAMS:
            raise MoeprintError(
                f"example generations run on CPU and are limited to models under "
                f"{MAX_EXAMPLE_PARAMS / 1e9:.0f}B parameters; this one has {n_params / 1e9:.1f}B."
            )

    def write_card(tmp: Path, result: PruneResult) -> None:
        if card is None:
            return
        examples = (
            generate_examples(tmp, card.example_prompts, card.max_new_tokens, card.load)
            if card.example_prompts
            else None
        )
        dtypes = {t.dtype for t in list_tensors(tmp)}
        model_card = build_card(
            name=out_dir.name,
            plan=plan,
            config=config,
            family=family,
            n_parameters=result.n_parameters,
            n_bytes=result.n_bytes,
            weight_format=weight_format(dtype, config, dtypes),
            options=card,
            examples=examples,
            base_fingerprint=model_fingerprint(model_dir),
        )
        model_card.save(tmp / "README.md")

    return prune_checkpoint(
        model_dir,
        plan,
        out_dir,
        dtype=dtype,
        shard_size=shard_size,
        overwrite=overwrite,
        progress=progress,
        finalize=write_card,
        router_rows=router_rows,
    )


def planned_parameters(model_dir: str | Path, plan: PrunePlan, dtype: str = "keep", tensors=None) -> int:
    """Parameters of the checkpoint `plan` would produce, from headers only (`tensors`: list_tensors, if known)."""
    config = load_config_dict(model_dir)
    adapter = adapter_for(config)
    tensors = tensors if tensors is not None else list_tensors(model_dir)
    specs = model_output_specs(tensors, plan, adapter, config, dtype)
    return count_parameters((s.name, s.dtype, s.shape) for s in specs)


def factory_plans(
    model_dir: Path,
    sizes: list[int],
    *,
    run_dir: Path | None,
    rankings_dir: Path | None,
    domains: list[str] | None,
    criterion: str | None,
) -> list[PrunePlan]:
    """Every (domain, size) plan, all validated before anything is written."""
    signature = model_signature(load_config_dict(model_dir))
    if rankings_dir is not None and run_dir is not None:
        raise MoeprintError("give a run directory or --rankings-dir, not both.")
    if rankings_dir is not None:
        sources = _folder_sources(model_dir, rankings_dir, domains, criterion)
    elif run_dir is None:
        raise MoeprintError("give a run directory (with fingerprints) or --rankings-dir.")
    else:
        sources = _run_sources(run_dir, domains, criterion, sizes[0])
    plans = [build_plan(source, n) for source in sources for n in sizes]
    for plan in plans:  # a ranking file's plans were validated against the model; a run's against the run
        if plan.num_layers != signature.num_layers or plan.architecture != signature.architecture:
            raise MoeprintError(f"run {run_dir} was recorded on another model than {model_dir}.")
    return plans


def _folder_sources(
    model_dir: Path, rankings_dir: Path, domains: list[str] | None, criterion: str | None
) -> list[PlanSource]:
    """One published-format ranking file per domain of a folder (`<domain>.json` or `.json.gz`)."""
    if not rankings_dir.is_dir():
        raise MoeprintError(f"rankings folder {rankings_dir} does not exist.")
    available = sorted(check_domain(p.name.split(".json")[0], str(rankings_dir)) for p in rankings_dir.glob("*.json*"))
    if not available:
        raise MoeprintError(f"rankings folder {rankings_dir} has no <domain>.json ranking files.")
    sources = []
    for domain in domains or available:
        if domain not in available:
            raise MoeprintError(f"unknown domain {domain!r}; {rankings_dir} has rankings for: {', '.join(available)}.")
        path = next(p for p in (rankings_dir / f"{domain}.json", rankings_dir / f"{domain}.json.gz") if p.exists())
        sources.append(PlanSource(ranking=path, model=model_dir, domain=domain, criterion=criterion or "published"))
    return sources


def _run_sources(run_dir: Path, domains: list[str] | None, criterion: str | None, probe_size: int) -> list[PlanSource]:
    """Every ranked domain of a run's criterion (default: every domain it ranks)."""
    if domains is None:
        probe = build_plan(
            PlanSource(run_dir=run_dir, domain=_any_domain(run_dir, criterion), criterion=criterion), probe_size
        )
        domains = ranked_domains(RunDir(Path(run_dir)).fingerprints_dir, probe.criterion)
    return [PlanSource(run_dir=run_dir, domain=domain, criterion=criterion) for domain in domains]


def _any_domain(run_dir: Path, criterion: str | None) -> str:
    fingerprints_dir = RunDir(Path(run_dir)).fingerprints_dir
    for crit in [criterion] if criterion else ranked_criteria(fingerprints_dir):
        for domain in ranked_domains(fingerprints_dir, crit):
            return domain
    return ALL  # plan_from_run then reports what is missing


def is_complete(path: Path) -> bool:
    return (path / INDEX_NAME).exists() and json_exists(path / PLAN_FILE) and (path / "config.json").exists()


def run_factory(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    sizes: Sizes | str | list[int],
    run_dir: str | Path | None = None,
    rankings_dir: str | Path | None = None,
    domains: list[str] | None = None,
    criterion: str | None = None,
    dtype: str = "keep",
    shard_size: int = 5 * 10**9,
    name_pattern: str = DEFAULT_NAME_PATTERN,
    card: CardOptions | None = CardOptions(),
    progress: bool = True,
    heal=None,
) -> list[FactoryRow]:
    """Write one named, carded checkpoint per (domain, size) into `out_dir`; skip the complete ones.
    `heal`: a healer (moeprint.evaluate.heal_plan.Healer; passed in, since prune sits below evaluate) whose
    `check(plan)` runs for every plan before anything is written and whose `heal(plan)` gives the healed
    plan and rows each checkpoint is written with."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = load_config_dict(model_dir)
    family = family_name(adapter_for(config).model_type)
    plans = factory_plans(
        model_dir,
        resolve_sizes(sizes, adapter_for(config).num_experts(config)),
        run_dir=Path(run_dir) if run_dir else None,
        rankings_dir=Path(rankings_dir) if rankings_dir else None,
        domains=domains,
        criterion=criterion,
    )
    for plan in plans if heal is not None else ():
        heal.check(plan)  # calibration texts of every domain, before any weight loads
    named, tensors = [], list_tensors(model_dir)
    for plan in plans:
        n_params = planned_parameters(model_dir, plan, dtype, tensors)
        name = model_name(
            name_pattern,
            family=family,
            n_params=n_params,
            domain=plan.domain,
            n_experts=plan.n_experts,
            criterion=plan.criterion,
        )
        named.append((plan, name, n_params))
    if len({name for _, name, _ in named}) != len(named):
        raise MoeprintError(f"name pattern {name_pattern!r} gives two outputs the same name; add {{n}} and {{domain}}.")
    identity = model_sha256(model_dir)
    lock = OutputLock(out_dir).acquire()  # one factory per --out; each checkpoint also locks its own folder
    rows: list[FactoryRow] = []
    with bar("factory", len(named), progress) as advance:
        for plan, name, n_params in named:
            target = out_dir / name
            if is_complete(target):
                record = read_checkpoint_record(target)
                if record.kept != [list(k) for k in plan.kept] or bool(record.extra.get("heal")) != bool(heal):
                    raise MoeprintError(f"{target} exists with a different plan; remove it or use another --out.")
                if record.source_model_sha256 != identity:
                    raise MoeprintError(
                        f"{target} exists but was not pruned from these weights of {model_dir} "
                        "(source_model_sha256 differs); remove it or use another --out."
                    )
                status, n_bytes = FactoryStatus.SKIPPED, sum(t.nbytes for t in list_tensors(target))
            else:
                router_rows = None
                if heal is not None:
                    plan, router_rows, _ = heal.heal(plan)
                result = build_checkpoint(
                    model_dir,
                    plan,
                    target,
                    dtype=dtype,
                    shard_size=shard_size,
                    card=card,
                    overwrite=True,
                    progress=False,
                    router_rows=router_rows,
                )
                if result.n_parameters != n_params:  # the name was computed before writing
                    raise RuntimeError(f"{name}: planned {n_params} parameters, wrote {result.n_parameters}")
                status, n_bytes = FactoryStatus.WRITTEN, result.n_bytes
            rows.append(
                FactoryRow(name, plan.domain, plan.n_experts, n_params, round(n_bytes / 1e9, 4), status, str(target))
            )
            advance(status=name)
    _write_summary(out_dir, rows)
    lock.release()
    return rows


SUMMARY_FILE = "summary.json"


def read_factory_names(out_dir: str | Path) -> list[str] | None:
    """The checkpoint names a factory's summary.json lists, in its order (None when the folder has none)."""
    path = Path(out_dir) / SUMMARY_FILE
    if not json_exists(path):
        return None
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in rows):
        raise MoeprintError(f"{path} is not a factory summary (a list of rows with `name`).")
    return [r["name"] for r in rows]


def _write_summary(out_dir: Path, rows: list[FactoryRow]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FactoryRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    atomic_write_json(out_dir / SUMMARY_FILE, [asdict(r) for r in rows])
