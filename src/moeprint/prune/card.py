"""The README.md model card of a pruned checkpoint, built with huggingface_hub's ModelCard.

The card states what was kept and why (criterion, data, ranking source), the architecture and size,
retention numbers when its caller renders them (`CardRetention`: the CLI and the demo render an
evaluation JSON with `moeprint.evaluate.results.card_retention`; this stage never reads evaluate's files),
loading code that needs no trust_remote_code, and optionally generations produced by the pruned model itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.loader import LoadSettings, load_causal_lm, load_tokenizer
from moeprint.types import PrunePlan

# The values the hub accepts for base_model_relation; a pruned model is none of them, so cards leave it out.
HUB_BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Generations on CPU are only offered for models that load in seconds.
MAX_EXAMPLE_PARAMS = 2_000_000_000
DEFAULT_EXAMPLE_PROMPTS = ("Explain what a mixture-of-experts model is.", "Write a haiku about the sea.")


@dataclass(frozen=True)
class RetentionMetric:
    """One model-index entry: a metric of the cut on one evaluation domain's held-out text."""

    eval_domain: str
    metric: str  # e.g. `ppl`, `ppl_retention`
    value: float


@dataclass(frozen=True)
class CardRetention:
    """The card's retention section, already rendered by the caller."""

    intro: str  # the sentence above the table, naming the source
    table: str  # Markdown
    metrics: tuple[RetentionMetric, ...] = ()  # claimed as hub evaluation results; none for free-form JSON


@dataclass(frozen=True)
class CardOptions:
    base_model_id: str | None = None  # hub id of the base model; default: the plan's base_model if it is one
    license: str = "apache-2.0"
    datasets: tuple[str, ...] = ()
    language: tuple[str, ...] = ("en",)
    retention: CardRetention | None = None
    example_prompts: tuple[str, ...] = ()
    max_new_tokens: int = 48
    load: LoadSettings = LoadSettings()  # where and in which dtype the example generations run
    extra_tags: tuple[str, ...] = field(default=())


def build_card(
    *,
    name: str,
    plan: PrunePlan,
    config: dict[str, Any],
    family: str,
    n_parameters: int,
    n_bytes: int,
    weight_format: str,
    options: CardOptions,
    examples: list[tuple[str, str]] | None = None,
    base_fingerprint: str | None = None,
):
    """A validated huggingface_hub ModelCard for one pruned checkpoint.

    `base_fingerprint` (sha256 of the base's config and weight headers) labels a base that has no hub id.
    """
    from huggingface_hub import ModelCard

    from moeprint import __version__
    from moeprint.adapters import adapter_for

    # a relative local folder ("models/base-20b") has the shape of a hub id: only a name that is not a folder here is one
    looks_hub = HUB_ID.match(plan.base_model) and not Path(plan.base_model).exists()
    base_id = options.base_model_id or (plan.base_model if looks_hub else None)
    base_experts = plan.base_num_experts if plan.base_num_experts is not None else "?"
    # Plans count MoE layers; readers count decoder layers (they differ when a family has dense layers).
    decoder_layers = adapter_for(config).moe_layers(config)
    base_label = f"`{base_id}`" if base_id else _local_label(plan, base_fingerprint)
    lines = [
        f"# {name}",
        "",
        f"A pruned derivative of {base_label}: {plan.n_experts} of its {base_experts} experts per MoE layer kept, "
        f"chosen for the **{plan.domain}** domain by the **{plan.criterion}** criterion. " + _what_changed(plan),
        "",
        *_size_section(plan, config, decoder_layers, base_label, base_experts, n_parameters, n_bytes, weight_format),
        *_selection_section(plan, decoder_layers),
        *_retention_section(options.retention),
        *_usage_section(name),
        *_examples_section(examples),
        "---",
        f"Made with moeprint {__version__} (`moeprint prune`).",
    ]
    data = _card_data(name, plan, family, base_id, options)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    validate_card(card)
    return card


def _card_data(name: str, plan: PrunePlan, family: str, base_id: str | None, options: CardOptions):
    """The card's YAML metadata, in the hub's conventions."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        base_model=base_id,  # no base_model_relation: the hub defines none for pruned derivatives
        license=options.license,
        datasets=list(options.datasets) or None,
        language=list(options.language) or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=sorted(
            {
                "moe",
                "mixture-of-experts",
                "expert-pruning",
                "moeprint",
                family,
                *_tag(plan.domain),
                *_tag(plan.criterion),
                *options.extra_tags,
            }
        ),
        model_name=name,
        eval_results=_eval_results(options.retention) or None,
    )


def _size_section(plan, config, decoder_layers, base_label, base_experts, n_parameters, n_bytes, weight_format):
    return [
        "## Architecture and size",
        "",
        "| | |",
        "|---|---|",
        f"| Base model | {base_label} |",
        f"| Architecture | {plan.architecture} |",
        f"| MoE layers | {plan.num_layers} (of {_cfg_layers(config, decoder_layers)} decoder layers) |",
        f"| Experts per layer | {plan.n_experts} (of {base_experts}) |",
        f"| Experts per token (top-k) | {plan.effective_top_k} |",
        f"| Parameters | {n_parameters:,} ({_human(n_parameters)}) |",
        f"| Hidden size | {config.get('hidden_size', '?')} |",
        f"| Vocabulary | {config.get('vocab_size', '?')} |",
        f"| Weights | {weight_format}, {n_bytes / 1e9:.2f} GB |",
        "",
        "Parameters are counted from the written tensors; quantised weights count as the values they encode.",
        "",
    ]


def _selection_section(plan: PrunePlan, decoder_layers) -> list[str]:
    return [
        "## How the experts were chosen",
        "",
        f"- Domain: `{plan.domain}`; criterion: `{plan.criterion}`.",
        f"- Ranking: `{_ranking_label(plan)}`. Each layer keeps the first {plan.n_experts} experts of that ranking; "
        "kept experts are renumbered in ascending order of their old ids.",
        *_calibration_lines(plan.extra.get("calibration") or {}),
        "- The exact ids per layer and the old -> new mapping are in `moeprint_plan.json`.",
        "- Exactness: loaded with stock transformers on a CPU in float32, this checkpoint's architecture computes "
        "logits equal bit for bit to the base model's under moeprint's router mask (routing from the kept "
        "experts' router rows only"
        + (", replaced by the healed rows" if plan.extra.get("heal") else "")
        + "); moeprint's test suite checks that equality on small models in this "
        "checkpoint's format, not on this checkpoint.",
        "",
        "<details><summary>Kept experts per layer (decoder-layer numbering)</summary>",
        "",
        *[f"- layer {layer}: {', '.join(map(str, kept))}" for layer, kept in zip(decoder_layers, plan.kept)],
        "",
        "</details>",
        "",
    ]


def _usage_section(name: str) -> list[str]:
    return [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model_id = "{name}"  # or the local folder',
        "tokenizer = AutoTokenizer.from_pretrained(model_id)",
        'model = AutoModelForCausalLM.from_pretrained(model_id, dtype="auto")',
        'messages = [{"role": "user", "content": "Hello!"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        "out = model.generate(**inputs, max_new_tokens=64)",
        'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "No `trust_remote_code` is needed: the folder is a standard transformers checkpoint of the base architecture.",
        "",
    ]


def _what_changed(plan: PrunePlan) -> str:
    heal = plan.extra.get("heal")
    if not heal:
        return (
            "Nothing was retrained: the kept experts and their router rows are the base model's, bit for bit, "
            "and the router simply has fewer experts to pick from."
        )
    settings = heal.get("settings") or {}
    return (
        f"The router rows (weight and bias) of the kept experts were retrained (healed, objective "
        f"`{heal.get('objective', '?')}`, {heal.get('fit_tokens', '?')} calibration tokens, "
        f"seed {settings.get('seed', '?')}) so that the cut imitates its base: mean token KL(base || cut) on "
        f"held-back calibration text {_num(heal.get('holdout_kl_before'))} -> {_num(heal.get('holdout_kl_after'))} "
        "nats. Nothing else was retrained: every expert weight and every other tensor is the base model's, "
        "bit for bit."
    )


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


def _tag(value: str) -> list[str]:
    """A hub tag from a domain or criterion name (lower case, no spaces); nothing for an empty name."""
    tag = re.sub(r"[^a-z0-9._-]+", "-", value.lower()).strip("-")
    return [tag] if tag else []


def _cfg_layers(config: dict[str, Any], decoder_layers: list[int]) -> Any:
    return config.get("num_hidden_layers", (max(decoder_layers) + 1) if decoder_layers else "?")


def _local_label(plan: PrunePlan, fingerprint: str | None) -> str:
    """A base with no hub id: its architecture and weights fingerprint (a folder's name says nothing)."""
    label = f"a local {plan.architecture} checkpoint"
    return f"{label} (weights fingerprint `{fingerprint[:16]}`)" if fingerprint else label


def _ranking_label(plan: PrunePlan) -> str:
    """The ranking file without the machine's folders: `<run>/fingerprints/...` or the file name."""
    source = str(plan.extra.get("ranking_source") or "")
    if not source:
        return "given by the plan"
    parts = Path(source).parts
    if "fingerprints" in parts:
        i = parts.index("fingerprints")
        return "/".join(parts[max(i - 1, 0) :])
    return Path(source).name


def _calibration_lines(calibration: dict[str, Any]) -> list[str]:
    if not calibration:
        return ["- Calibration data: not recorded in the plan."]
    bits = [f"source `{calibration.get('source', '?')}`"]
    if calibration.get("n_tokens") is not None:
        bits.append(f"{int(calibration['n_tokens']):,} tokens")
    if calibration.get("n_prompts") is not None:
        bits.append(f"{int(calibration['n_prompts']):,} prompts")
    if calibration.get("sha256"):
        bits.append(f"sha256 `{calibration['sha256']}`")
    return ["- Calibration data: " + ", ".join(bits) + "."]


def _eval_results(retention: CardRetention | None) -> list:
    """model-index entries: per evaluation domain, the cut's value and its retention of the base's."""
    if retention is None or not retention.metrics:
        return []
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=f"moeprint-heldout-{m.eval_domain}",
            dataset_name=f"held-out {m.eval_domain} text",
            metric_type=m.metric,
            metric_value=m.value,
        )
        for m in retention.metrics
    ]


def validate_card(card) -> None:
    """Offline checks of the metadata a hub upload needs (`ModelCard.validate` itself needs the network)."""
    from huggingface_hub import ModelCard

    parsed = ModelCard(str(card)).data  # re-parse what will be written
    data = parsed.to_dict()
    problems = []
    relation = data.get("base_model_relation")
    if relation is not None and relation not in HUB_BASE_MODEL_RELATIONS:
        problems.append(f"base_model_relation {relation!r} is not one the hub defines")
    if not isinstance(data.get("license"), str) or not data["license"]:
        problems.append("license missing")
    if data.get("pipeline_tag") != "text-generation":
        problems.append("pipeline_tag is not text-generation")
    base = data.get("base_model")
    if base is not None and not HUB_ID.match(str(base)):
        problems.append(f"base_model {base!r} is not a hub id (owner/name)")
    if not isinstance(data.get("tags"), list) or not all(isinstance(t, str) and t for t in data["tags"]):
        problems.append("tags must be a list of strings")
    for ds in data.get("datasets") or []:
        if not HUB_ID.match(ds):
            problems.append(f"dataset {ds!r} is not a hub id")
    if "model-index" in str(card) and not parsed.eval_results:
        problems.append("model-index does not parse into evaluation results")
    if problems:
        raise MoeprintError("model card metadata is invalid: " + "; ".join(problems) + ".")


def _retention_section(retention: CardRetention | None) -> list[str]:
    if retention is None:
        return ["## Retention", "", "Not measured for this checkpoint (run `moeprint evaluate` and pass `--eval`).", ""]
    return ["## Retention", "", retention.intro, "", retention.table, ""]


def _examples_section(examples: list[tuple[str, str]] | None) -> list[str]:
    if not examples:
        return []
    out = ["## Example generations", "", "Greedy, produced by this checkpoint itself when it was written:", ""]
    for prompt, reply in examples:
        out += [f"**Prompt:** {prompt}", "", "```text", reply.replace("```", "'''").strip() or "(empty)", "```", ""]
    return out


def _human(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def generate_examples(
    model_dir: Path, prompts: tuple[str, ...], max_new_tokens: int, settings: LoadSettings = LoadSettings()
) -> list[tuple[str, str]]:
    """Greedy generations of the (pruned) model in `model_dir`, placed and typed by `settings`."""
    from moeprint.prune.mask import generate_text

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, settings)
    return [(p, generate_text(model, tokenizer, p, max_new_tokens)) for p in prompts]


def weight_format(dtype: str, config: dict[str, Any], tensors_dtypes: set[str]) -> str:
    from moeprint.adapters import quantisation_for

    layout = quantisation_for(config)
    if dtype == "keep" and layout is not None:
        return f"{layout.label} experts (as the base)"
    return "/".join(sorted(tensors_dtypes)).lower()
