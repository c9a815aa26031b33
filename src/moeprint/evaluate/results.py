"""Evaluate and sweep result files: the only reader, as typed records (schemas in docs/evaluate.md).

Writers: `moeprint.evaluate.compare` (one `moeprint.evaluate/1` JSON per cut) and `moeprint.evaluate.sweep`
(`results.json` of schema `moeprint.sweep/1` in a sweep folder); both take their schema string from here.
Every other module (report, plots, model cards via the CLI, the quality benchmark) reads through
`read_result` / `parse_evaluate` / `parse_sweep` and gets `EvaluateResult` / `SweepResult` records.

`load_retention(path)` flattens either kind into one table (see RETENTION_COLUMNS): one row per (cut,
evaluation domain, metric). `base` is the base model's value where one exists, `retention` is how much of
the base's quality the cut keeps (1 = all of it): base/cut for perplexity, cut/base for accuracies and
finished rate; None for KL, agreement, looping and drafting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moeprint.errors import MoeprintError
from moeprint.io.atomic import read_json
from moeprint.types import ALL

if TYPE_CHECKING:  # moeprint.prune loads torch; the site reads results without it
    from moeprint.prune.card import CardRetention

EVALUATE_SCHEMA = "moeprint.evaluate/1"
SWEEP_SCHEMA = "moeprint.sweep/1"
SWEEP_RESULTS = "results.json"  # the sweep folder's result document
SECTIONS = ("text", "mc", "generation", "speculative", "lm_eval")  # measurement sections of one cut

RETENTION_COLUMNS = (
    "cut",
    "kind",
    "plan_domain",
    "criterion",
    "n_experts",
    "num_experts",
    "seed",
    "eval_domain",
    "in_domain",
    "metric",
    "base",
    "value",
    "retention",
    "n",
)

# (section, metric name in the table, key of the cut's value, key of the base's value, retention rule)
_METRICS = (
    ("text", "ppl", "ppl_cut", "ppl_base", "base/cut"),
    ("text", "kl", "kl", None, None),
    ("text", "top1_agreement", "top1_agreement", None, None),
    ("mc", "mc_acc", "acc_cut", "acc_base", "cut/base"),
    ("mc", "mc_acc_norm", "acc_norm_cut", "acc_norm_base", "cut/base"),
    ("generation", "finished_rate", "finished_rate_cut", "finished_rate_base", "cut/base"),
    ("generation", "looping_rate", "looping_rate_cut", "looping_rate_base", None),
    ("speculative", "acceptance_rate", "acceptance_rate", None, None),
    ("speculative", "tokens_per_base_forward", "tokens_per_base_forward", None, None),
)


def _number(value: Any) -> Any:
    """The value as written when it is a number (not a bool), else None."""
    return value if isinstance(value, Number) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class CutInfo:
    """A result's `cut` record. `domain` is the plan's domain ("" or None for the base and random cuts)."""

    name: str | None
    kind: str | None
    domain: str | None
    criterion: str | None
    n_experts: int | None
    num_experts: int | None
    seed: int | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # every key as written (kept, router_rows, ...)

    @classmethod
    def parse(cls, cut: Mapping[str, Any]) -> CutInfo:
        return cls(
            name=cut.get("name"),
            kind=cut.get("kind"),
            domain=cut.get("domain"),
            criterion=cut.get("criterion"),
            n_experts=_number(cut.get("n_experts")),
            num_experts=_number(cut.get("num_experts")),
            seed=cut.get("seed"),
            raw=dict(cut),
        )

    @property
    def is_random(self) -> bool:
        return self.criterion == "random"

    def selects_for(self, domain: str) -> bool:
        """The cut is `domain`'s own selection, or a random one (which counts for every domain)."""
        return self.is_random or self.domain == domain


@dataclass(frozen=True)
class TextMetrics:
    """One evaluation domain of a `text` section (held-out perplexity, KL, agreement); values as written."""

    n_tokens: int | None
    ppl_base: float | None
    ppl_cut: float | None
    ppl_ratio: float | None
    kl: float | None
    top1_agreement: float | None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> TextMetrics:
        keys = ("n_tokens", "ppl_base", "ppl_cut", "ppl_ratio", "kl", "top1_agreement")
        return cls(*(_number(values.get(k)) for k in keys))

    @property
    def retention(self) -> float | None:
        """base / cut perplexity (1 = unchanged), from the perplexities or else from the ratio."""
        if self.ppl_cut is not None and self.ppl_base is not None and self.ppl_cut > 0:
            return float(self.ppl_base) / float(self.ppl_cut)
        if self.ppl_ratio is not None and self.ppl_ratio > 0:
            return 1.0 / float(self.ppl_ratio)
        return None

    @property
    def increase(self) -> float | None:
        """ppl_cut - ppl_base."""
        return None if self.ppl_cut is None or self.ppl_base is None else self.ppl_cut - self.ppl_base


@dataclass(frozen=True)
class CutResult:
    """One cut and its measurement sections (`text`, `mc`, `generation`, `speculative`, `lm_eval`)."""

    cut: CutInfo
    sections: Mapping[str, Mapping[str, Any]] = field(repr=False)

    @classmethod
    def parse(cls, cut: Mapping[str, Any], doc: Mapping[str, Any]) -> CutResult:
        return cls(CutInfo.parse(cut), {s: doc[s] for s in SECTIONS if isinstance(doc.get(s), dict)})

    def per_domain(self, section: str) -> dict[str, Mapping[str, Any]]:
        """{evaluation domain: values} of a section (empty when the section is absent)."""
        return {d: _dict(v) for d, v in _dict(_dict(self.sections.get(section)).get("per_domain")).items()}

    def text(self, domain: str) -> TextMetrics | None:
        values = self.per_domain("text").get(domain)
        return None if values is None else TextMetrics.parse(values)

    def text_domains(self) -> dict[str, TextMetrics]:
        return {d: TextMetrics.parse(v) for d, v in self.per_domain("text").items()}

    def value(self, path: str) -> Any:
        """A value by its dotted path inside the sections, e.g. `text.in_domain.ppl_ratio`; None if absent."""
        node: Any = self.sections
        for key in path.split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    def retention_rows(self) -> Iterator[dict[str, Any]]:
        """The flat table's rows of this cut (RETENTION_COLUMNS)."""
        cut = self.cut
        plan_domain = cut.domain or None
        common = {
            "cut": cut.name,
            "kind": cut.kind,
            "plan_domain": plan_domain,
            "criterion": cut.criterion,
            "n_experts": cut.n_experts,
            "num_experts": cut.num_experts,
            "seed": cut.seed,
        }
        for section, metric, key, base_key, rule in _METRICS:
            for domain, values in self.per_domain(section).items():
                if not values or values.get(key) is None:
                    continue
                value = values[key]
                base = values.get(base_key) if base_key else None
                retention = (
                    _ratio(base, value) if rule == "base/cut" else _ratio(value, base) if rule == "cut/base" else None
                )
                yield {
                    **common,
                    "eval_domain": domain,
                    "in_domain": (domain == plan_domain) if plan_domain else None,
                    "metric": metric,
                    "base": base,
                    "value": value,
                    "retention": retention,
                    "n": values.get("n_tokens", values.get("n", values.get("new_tokens"))),
                }
        harness = _dict(self.sections.get("lm_eval"))
        for task, metrics in _dict(harness.get("cut")).items():
            for name, value in _dict(metrics).items():
                if _number(value) is None or "stderr" in name:
                    continue
                base = _dict(_dict(harness.get("base")).get(task)).get(name)
                yield {
                    **common,
                    "eval_domain": task,
                    "in_domain": None,
                    "metric": f"lm_eval:{name}",
                    "base": base,
                    "value": value,
                    "retention": _ratio(value, base),
                    "n": None,
                }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass(frozen=True)
class EvaluateResult:
    """A `moeprint evaluate` result: one cut against its base."""

    result: CutResult
    schema: str = EVALUATE_SCHEMA
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the document as written

    @property
    def cut(self) -> CutInfo:
        return self.result.cut


@dataclass(frozen=True)
class SweepResult:
    """A `moeprint sweep` results document: the grid's settings and one CutResult per cut."""

    domains: list[str]
    sizes: list[int]
    criteria: list[str]
    base_model: str | None
    num_layers: int | None
    num_experts: int | None
    top_k: int | None
    cuts: list[CutResult]
    schema: str = SWEEP_SCHEMA
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SweepResult:
        """Parse a sweep document (from a file or still in memory); cut entries without a `cut` record are skipped."""
        entries = doc.get("cuts") if isinstance(doc.get("cuts"), list) else []
        cuts = [CutResult.parse(e["cut"], e) for e in entries if isinstance(e, dict) and isinstance(e.get("cut"), dict)]
        return cls(
            domains=[str(d) for d in doc.get("domains") or []],
            sizes=list(doc.get("sizes") or []),
            criteria=list(doc.get("criteria") or []),
            base_model=doc.get("base_model"),
            num_layers=_number(doc.get("num_layers")),
            num_experts=_number(doc.get("num_experts")),
            top_k=_number(doc.get("top_k")),
            cuts=cuts,
            schema=str(doc.get("schema") or SWEEP_SCHEMA),
            doc=doc,
        )

    def eval_domains(self) -> list[str]:
        """The domains the cuts were scored on (the pooled `all` left out)."""
        return [d for d in self.domains if d != ALL]

    def ppl_retention(self) -> dict[str, dict[str, dict[int, float]]]:
        """{plan domain: {criterion: {n: in-domain base/cut perplexity}}}: each domain's own selections;
        random cuts (no domain) count for every domain they were evaluated on, averaged over seeds."""
        sums: dict[str, dict[str, dict[int, list[float]]]] = {}
        for entry in self.cuts:
            cut = entry.cut
            if cut.n_experts is None:
                continue
            for domain, metrics in entry.text_domains().items():
                value = metrics.retention if cut.selects_for(domain) else None
                if value is not None:
                    bucket = sums.setdefault(domain, {}).setdefault(str(cut.criterion), {})
                    bucket.setdefault(int(cut.n_experts), []).append(value)
        return {
            d: {c: {n: sum(v) / len(v) for n, v in pts.items()} for c, pts in crits.items()}
            for d, crits in sums.items()
        }


def result_kind(doc: Any) -> str | None:
    """`evaluate`, `sweep`, or None for a document of neither schema family."""
    schema = str(doc.get("schema", "")) if isinstance(doc, dict) else ""
    if schema.startswith("moeprint.evaluate/"):
        return "evaluate"
    if schema.startswith("moeprint.sweep/"):
        return "sweep"
    return None


def parse_evaluate(doc: Mapping[str, Any]) -> EvaluateResult:
    return EvaluateResult(CutResult.parse(_dict(doc.get("cut")), doc), str(doc.get("schema")), doc)


def parse_result(doc: Any, where: str | Path = "result") -> EvaluateResult | SweepResult:
    """A parsed evaluate or sweep document, or one clear error naming `where`."""
    if not isinstance(doc, dict) or "schema" not in doc:
        raise MoeprintError(f"{where} is not a moeprint evaluate or sweep result (no `schema`).")
    kind = result_kind(doc)
    if kind == "evaluate":
        return parse_evaluate(doc)
    if kind == "sweep":
        return SweepResult.from_doc(doc)
    raise MoeprintError(f"{where} has unknown schema {doc['schema']!r}.")


def read_result(path: str | Path) -> EvaluateResult | SweepResult:
    """An evaluate result JSON, or a sweep folder / its results.json."""
    path = Path(path)
    if path.is_dir():
        path = path / SWEEP_RESULTS
    return parse_result(read_json(path), path)


def load_retention(path: str | Path) -> list[dict[str, Any]]:
    """The flat retention table of an evaluate result JSON, or of a sweep folder / its results.json."""
    result = read_result(path)
    cuts = [result.result] if isinstance(result, EvaluateResult) else result.cuts
    return [row for cut in cuts for row in cut.retention_rows()]


# (label, section, cut key, base key, format) of the model card's table
_CARD_TABLE = (
    ("perplexity (base -> cut)", "text", "ppl_cut", "ppl_base", "{b:.3f} -> {v:.3f}"),
    ("mean token KL(base \\|\\| cut)", "text", "kl", None, "{v:.4f}"),
    ("top-1 agreement with base", "text", "top1_agreement", None, "{v:.1%}"),
    ("multiple-choice accuracy (base -> cut)", "mc", "acc_cut", "acc_base", "{b:.1%} -> {v:.1%}"),
    (
        "finished before cap (base -> cut)",
        "generation",
        "finished_rate_cut",
        "finished_rate_base",
        "{b:.0%} -> {v:.0%}",
    ),
    ("looping (base -> cut)", "generation", "looping_rate_cut", "looping_rate_base", "{b:.0%} -> {v:.0%}"),
    ("draft acceptance for the base", "speculative", "acceptance_rate", None, "{v:.1%}"),
    ("tokens per base forward", "speculative", "tokens_per_base_forward", None, "{v:.2f}"),
)


def _markdown(result: EvaluateResult) -> str:
    lines = ["| metric | in-domain | off-domain | all |", "|---|---|---|---|"]
    for label, section, key, base_key, fmt in _CARD_TABLE:
        part = result.result.sections.get(section)
        if not part:
            continue
        cells = []
        for scope in ("in_domain", "off_domain", "all"):
            m = part.get(scope)
            cells.append(
                fmt.format(v=m[key], b=m[base_key] if base_key else 0) if m and m.get(key) is not None else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def retention_markdown(path: str | Path) -> str:
    """A short Markdown table of an evaluate result for a model card: in-domain, off-domain and all."""
    doc = read_json(path)
    if result_kind(doc) != "evaluate":
        raise MoeprintError(f"{path} is not a moeprint evaluate result.")
    return _markdown(parse_evaluate(doc))


def _numeric_leaves(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, float]]:
    """Flatten the numbers of an evaluation JSON (nested dicts, up to three levels) into dotted keys."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [(prefix or "value", float(obj))]
    if isinstance(obj, dict) and depth < 3:
        return [
            row for k, v in obj.items() for row in _numeric_leaves(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        ]
    return []


def card_retention(path: str | Path) -> CardRetention:
    """What a model card says about retention, rendered from the JSON given with `--eval`: an evaluate result
    becomes its table plus model-index metrics; any other JSON of numbers is shown as it is, without metrics."""
    from moeprint.prune.card import CardRetention, RetentionMetric

    path = Path(path)
    doc = read_json(path)  # a clear error for missing or malformed JSON, before any weight is read
    if result_kind(doc) == "evaluate":
        result = parse_evaluate(doc)
        metrics = []
        for row in result.result.retention_rows():
            if row["value"] is None or row["metric"].startswith("lm_eval:"):
                continue
            metrics.append(RetentionMetric(row["eval_domain"], row["metric"], float(row["value"])))
            if row["retention"] is not None:
                metrics.append(
                    RetentionMetric(row["eval_domain"], f"{row['metric']}_retention", float(row["retention"]))
                )
        return CardRetention(
            intro=f"Measured by `moeprint evaluate` against the base model (`{path.name}`):",
            table=_markdown(result),
            metrics=tuple(metrics),
        )
    rows = _numeric_leaves(doc)
    if not rows:
        raise MoeprintError(f"{path} holds no numbers to report.")
    table = ["| metric | value |", "|---|---|", *[f"| {key} | {value:.4g} |" for key, value in rows[:60]]]
    return CardRetention(intro=f"From `{path.name}`:", table="\n".join(table))
