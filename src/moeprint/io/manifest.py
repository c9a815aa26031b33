"""The run manifest (RUN/manifest.json) as a typed record, and its one JSON conversion each way.

`RunDir.write_manifest` (moeprint.io.run) is the only writer and `RunDir.manifest` the only reader; both go
through `RunManifest.to_json` / `RunManifest.from_json`. The JSON keeps the flat layout every earlier run has:

    kind, model, model_sha256, model_weights?, architecture,      ModelIdentity
    num_layers, num_experts, top_k, moe_layers?, expert_groups?,  the routing shape
    domains, n_prompts?, n_tokens?, has_logits, has_norms, has_token_ids, prompt_suite_sha256,
    template_inputs, rendered_sha256, shard,                      RecordingInputs (recorded runs only)
    generation, versions, source?, merged_from?                   GenerationSettings, ImportSource

Keys marked ? are written only when known. Runs written before a key existed load with its default.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.names import check_domain

# the release day of the reference project's model: a fixed date, so that a run renders the same text on every day and machine.
DEFAULT_DATE = "2025-08-05"


@dataclass(frozen=True)
class TemplateInputs:
    """The volatile inputs of a chat template, fixed per run: the date that templates read from the
    clock (a `Current date:` line, via `strftime_now`) or from `date_string` (Llama 3)."""

    date: str = DEFAULT_DATE  # YYYY-MM-DD

    def __post_init__(self) -> None:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.date):
                raise ValueError
            dt.date.fromisoformat(self.date)
        except (TypeError, ValueError):
            raise MoeprintError(f"--date must be a calendar date YYYY-MM-DD, not {self.date!r}.") from None

    def to_json(self) -> dict[str, str]:
        return {"date": self.date}


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a run routed. Imported runs know only a name (and not always that)."""

    name: str | None = None  # "model": the local folder recorded from, or a hub id
    sha256: str | None = None  # "model_sha256": config + weights content (moeprint.io.identity); None if unknown
    architecture: str | None = None  # config.architectures[0]
    weights: Mapping[str, str] | None = None  # "model_weights": safetensors file name -> sha256


@dataclass(frozen=True)
class GenerationSettings:
    """How the recorded tokens were generated (None: not known, e.g. imported runs)."""

    max_new_tokens: int | None = None
    do_sample: bool | None = None
    seed: int | None = None
    batch_size: int | None = None
    reasoning_effort: str | None = None
    dtype: str | None = None  # the --dtype asked for: the dtype the model runs in changes the routing

    def to_json(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "reasoning_effort": self.reasoning_effort,
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> GenerationSettings:
        data = data or {}
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RecordingInputs:
    """What only a recording has: the fixed template inputs, the hash of the rendered prompts, its shard."""

    template: TemplateInputs | None = None  # "template_inputs"
    rendered_sha256: str | None = None
    shard: str | None = None  # "I/N" of `record --shard`, None for a whole (or merged) run


@dataclass(frozen=True)
class ImportSource:
    """Where an imported run came from and what the import skipped (moeprint.importers.fingerprinting)."""

    path: str
    domains_map: str
    combos: int
    missing_examples: int
    missing_summaries: int
    dropped_rows: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImportSource:
        return cls(
            path=str(data.get("path", "")),
            domains_map=str(data.get("domains_map", "")),
            **{k: int(data.get(k) or 0) for k in ("combos", "missing_examples", "missing_summaries", "dropped_rows")},
        )


@dataclass(frozen=True)
class RunManifest:
    """A complete run's description: what every stage reads before it reads traces."""

    kind: str  # "recorded" or "imported"
    model: ModelIdentity
    num_layers: int  # MoE layers recorded (trace rows hold num_layers * top_k choices)
    num_experts: int
    top_k: int
    domains: tuple[str, ...]
    n_prompts: int | None = None
    n_tokens: int | None = None  # trace rows
    moe_layers: tuple[int, ...] | None = None  # model layer index of each recorded MoE layer
    expert_groups: tuple[int, int] | None = (
        None  # (n_group, topk_group) of group-limited routing (`MoEAdapter.expert_groups`)
    )
    has_logits: bool = False
    has_norms: bool = False
    has_token_ids: bool = True  # False: imported traces carry a `token` string column instead
    prompt_suite_sha256: str | None = None
    recording: RecordingInputs | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    versions: Mapping[str, str] = field(default_factory=dict)  # moeprint, torch, transformers, python
    source: ImportSource | None = None
    merged_from: tuple[str, ...] | None = None  # the shard runs `merge-runs` read

    def to_json(self) -> dict[str, Any]:
        m, rec = self.model, self.recording
        out: dict[str, Any] = {"kind": self.kind, "model": m.name, "model_sha256": m.sha256}
        if m.weights is not None:
            out["model_weights"] = dict(m.weights)
        out.update(
            architecture=m.architecture, num_layers=self.num_layers, num_experts=self.num_experts, top_k=self.top_k
        )
        if self.moe_layers is not None:
            out["moe_layers"] = list(self.moe_layers)
        if self.expert_groups is not None:
            out["expert_groups"] = list(self.expert_groups)
        out.update(
            domains=list(self.domains),
            n_prompts=self.n_prompts,
            n_tokens=self.n_tokens,
            has_logits=self.has_logits,
            has_norms=self.has_norms,
            has_token_ids=self.has_token_ids,
            prompt_suite_sha256=self.prompt_suite_sha256,
        )
        if rec is not None:
            out["template_inputs"] = rec.template.to_json() if rec.template is not None else None
            out["rendered_sha256"] = rec.rendered_sha256
        out["generation"] = self.generation.to_json()
        if rec is not None:
            out["shard"] = rec.shard
        out["versions"] = dict(self.versions)
        if self.source is not None:
            out["source"] = dict(self.source.__dict__)
        if self.merged_from is not None:
            out["merged_from"] = list(self.merged_from)
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path) -> RunManifest:
        """The manifest in `data` (parsed JSON of `path`), checked; one clear error for a damaged one."""
        check_manifest(data, path)
        recording = None
        if any(k in data for k in ("template_inputs", "rendered_sha256", "shard")):
            template = data.get("template_inputs")
            recording = RecordingInputs(
                template=TemplateInputs(str(template.get("date", DEFAULT_DATE)))
                if isinstance(template, dict)
                else None,
                rendered_sha256=data.get("rendered_sha256"),
                shard=data.get("shard"),
            )
        groups, layers, merged = data.get("expert_groups"), data.get("moe_layers"), data.get("merged_from")
        weights = data.get("model_weights")
        return cls(
            kind=str(data.get("kind", "?")),
            model=ModelIdentity(
                name=data.get("model"),
                sha256=data.get("model_sha256"),
                architecture=data.get("architecture"),
                weights=dict(weights) if isinstance(weights, dict) else None,
            ),
            num_layers=data["num_layers"],
            num_experts=data["num_experts"],
            top_k=data["top_k"],
            domains=tuple(data["domains"]),
            n_prompts=data.get("n_prompts"),
            n_tokens=data.get("n_tokens"),
            moe_layers=tuple(int(x) for x in layers) if layers is not None else None,
            expert_groups=(int(groups[0]), int(groups[1])) if groups else None,
            has_logits=bool(data.get("has_logits")),
            has_norms=bool(data.get("has_norms")),
            has_token_ids=bool(data.get("has_token_ids", True)),
            prompt_suite_sha256=data.get("prompt_suite_sha256"),
            recording=recording,
            generation=GenerationSettings.from_json(data.get("generation")),
            versions=dict(data.get("versions") or {}),
            source=ImportSource.from_json(data["source"]) if isinstance(data.get("source"), dict) else None,
            merged_from=tuple(merged) if merged is not None else None,
        )


def check_manifest(manifest: Any, path: Path) -> None:
    """The keys every stage reads, with the right types; one clear error for a damaged manifest."""
    if not isinstance(manifest, dict):
        raise MoeprintError(f"{path} must be a JSON object (a run manifest); it is damaged.")
    for key in ("num_layers", "num_experts", "top_k"):
        value = manifest.get(key)
        if type(value) is not int or value < 1:
            raise MoeprintError(f"{path}: `{key}` must be a positive integer, not {value!r}; the manifest is damaged.")
    if manifest["top_k"] > manifest["num_experts"]:
        raise MoeprintError(f"{path}: top_k {manifest['top_k']} exceeds num_experts {manifest['num_experts']}.")
    for key in ("n_prompts", "n_tokens"):
        value = manifest.get(key)
        if key in manifest and (type(value) is not int or value < 0):
            raise MoeprintError(
                f"{path}: `{key}` must be a count (an integer >= 0), not {value!r}; the manifest is damaged."
            )
    domains = manifest.get("domains")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise MoeprintError(f"{path}: `domains` must be a list of names; the manifest is damaged.")
    for d in domains:
        check_domain(d, str(path))  # every stage turns domains into file names
    for key in ("moe_layers", "expert_groups", "merged_from"):
        value = manifest.get(key)
        if value is not None and not isinstance(value, list):
            raise MoeprintError(f"{path}: `{key}` must be a list, not {value!r}; the manifest is damaged.")
    for key in ("generation", "versions", "source", "model_weights", "template_inputs"):
        value = manifest.get(key)
        if value is not None and not isinstance(value, dict):
            raise MoeprintError(f"{path}: `{key}` must be a JSON object, not {value!r}; the manifest is damaged.")
