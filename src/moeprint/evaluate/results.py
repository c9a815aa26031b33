"""Reading retention results back: one flat table for model cards, the dashboard and plots.

`load_retention(path)` accepts an `moeprint evaluate` result JSON or a `moeprint sweep` folder /
its results.json, and returns rows (dicts, all with the same keys, see RETENTION_COLUMNS):
one row per (cut, evaluation domain, metric). `base` is the base model's value where one exists,
`retention` is how much of the base's quality the cut keeps (1 = all of it): base/cut for
perplexity, cut/base for accuracies and finished rate; None for KL, agreement, looping and drafting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.atomic import read_json

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


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def cut_rows(cut: dict[str, Any], sections: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Rows for one cut. `sections` holds the result's `text`, `mc`, `generation`, `speculative`, `lm_eval`."""
    plan_domain = cut.get("domain") or None
    common = {
        "cut": cut.get("name"),
        "kind": cut.get("kind"),
        "plan_domain": plan_domain,
        "criterion": cut.get("criterion"),
        "n_experts": cut.get("n_experts"),
        "num_experts": cut.get("num_experts"),
        "seed": cut.get("seed"),
    }
    for section, metric, key, base_key, rule in _METRICS:
        per_domain = (sections.get(section) or {}).get("per_domain") or {}
        for domain, values in per_domain.items():
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
    harness = sections.get("lm_eval") or {}
    for task, metrics in (harness.get("cut") or {}).items():
        for name, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or "stderr" in name:
                continue
            base = (harness.get("base") or {}).get(task, {}).get(name)
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


def load_retention(path: str | Path) -> list[dict[str, Any]]:
    """The flat retention table of an evaluate result JSON, or of a sweep folder / its results.json."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    doc = read_json(path)
    if not isinstance(doc, dict) or "schema" not in doc:
        raise MoeprintError(f"{path} is not a moeprint evaluate or sweep result (no `schema`).")
    if doc["schema"].startswith("moeprint.evaluate/"):
        return list(cut_rows(doc["cut"], doc))
    if doc["schema"].startswith("moeprint.sweep/"):
        return [row for entry in doc["cuts"] for row in cut_rows(entry["cut"], entry)]
    raise MoeprintError(f"{path} has unknown schema {doc['schema']!r}.")


def retention_markdown(path: str | Path) -> str:
    """A short Markdown table of an evaluate result for a model card: in-domain, off-domain and all."""
    doc = read_json(path)
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("moeprint.evaluate/"):
        raise MoeprintError(f"{path} is not a moeprint evaluate result.")
    lines = ["| metric | in-domain | off-domain | all |", "|---|---|---|---|"]
    spec = (  # (label, section, cut key, base key, format)
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
    for label, section, key, base_key, fmt in spec:
        part = doc.get(section)
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
