"""Import the published expert-fingerprinting data (routing of one published checkpoint) as a normal run directory.

Source layout (see the data's README):
    SRC/data/map.json                                   {dataset: {category: {combo: {sample_count, ...}}}}
    SRC/data/<dataset>/<category>/<combo>.json[.gz]          summary over sample_count prompts
    SRC/data/<dataset>/<category>/<combo>_examples.json[.gz] one full example with per-token routing
    SRC/domains.json                                    {domain: ["dataset/category", ...]}

Output: RUN/prompts.parquet, RUN/traces/part-*.parquet (token strings, token_id = -1),
RUN/published/summaries.parquet (the summaries as rows, so `analyze --criterion reference` can
replay the reference recipe), RUN/published/domains.json, and RUN/manifest.json last.

Alignment (verified against the summaries of single-sample combos, see tests): with prompt length
L = len(full_text) - len(generated_only), key `token_P` is the routing computed when the token at
position P (= generated token P - L) was fed. Prompt tokens carry no routing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moeprint.adapters import KnownCheckpoint, MoEAdapter, published_routing_source
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json, json_exists, read_json
from moeprint.io.manifest import GenerationSettings, ImportSource, ModelIdentity, RunManifest
from moeprint.io.names import check_domain, check_label, confined
from moeprint.io.run import (
    PROMPTS_SCHEMA,
    RunDir,
    software_versions,
    trace_schema,
    write_prompts_table,
    write_trace_part,
)
from moeprint.progress import track

OTHER_DOMAIN = "other"  # folders that no domain of domains.json names
ROWS_PER_PART = 32768

SUMMARY_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("category", pa.string()),
        ("combo", pa.string()),
        ("domain", pa.string()),
        ("sample_count", pa.int64()),
        ("segment", pa.string()),  # think | answer
        ("num_tokens", pa.float64()),  # num_think_tokens / num_answer_tokens of the file (a mean per prompt)
        ("layer", pa.int16()),
        ("expert", pa.int16()),
        ("key_order", pa.int32()),  # position of the expert's key in the file: the reference breaks ties by it
        ("prob_density", pa.float64()),
        ("count_frequency", pa.float64()),
    ]
)

# The name under which an adapter declares the checkpoint this data was recorded on (its family's
# chat format segments the tokens, its architecture goes into the manifest).
PUBLISHED_ROUTING = "expert-fingerprinting"


def _source_model() -> tuple[MoEAdapter, KnownCheckpoint]:
    return published_routing_source(PUBLISHED_ROUTING)


def segment_generated_tokens(tokens: list[str]) -> list[str]:
    """The segment of each generated token string, by the source family's chat-format rule
    (`ChatFormat.segments`, the rule recorded runs use too). On every finished example it equals the
    reference project's think/answer split (checked against its summaries)."""
    chat = _source_model()[0].chat_format
    return chat.segment_texts(tokens) if chat is not None else ["generated"] * len(tokens)


def _domain_of_folder(domains_map: dict[str, list[str]]) -> dict[str, str]:
    folder_domain: dict[str, str] = {}
    for domain, folders in domains_map.items():
        if domain.startswith("_"):
            continue
        check_domain(domain, "domains map")  # domains become file names (rankings/<criterion>/<domain>.json)
        if not isinstance(folders, list):
            raise MoeprintError(f"domains map entry {domain!r} must be a list of 'dataset/category' folders.")
        for folder in folders:
            if not isinstance(folder, str) or folder.count("/") != 1:
                raise MoeprintError(f"domains map entry {domain!r}: {folder!r} is not a 'dataset/category' folder.")
            for part in folder.split("/"):
                check_label(part, "folder", f"domains map entry {domain!r}")
            if folder in folder_domain and folder_domain[folder] != domain:
                raise MoeprintError(f"folder {folder!r} is mapped to both {folder_domain[folder]!r} and {domain!r}.")
            folder_domain[folder] = domain
    return folder_domain


def _example_rows(example: dict[str, Any], num_layers: int | None) -> tuple[dict[str, Any], int]:
    """Arrays for one example's routed tokens; returns (columns, rows dropped because out of range)."""
    full_text, generated = example["full_text"], example["generated_only"]
    prompt_len = len(full_text) - len(generated)
    segments = segment_generated_tokens(generated)
    positions, tokens, segs, ids, weights = [], [], [], [], []
    dropped = 0
    for entry in example["router_data"]:
        ((key, layers),) = entry.items()
        pos = int(key.removeprefix("token_"))
        if not prompt_len <= pos < len(full_text):
            dropped += 1
            continue
        n_layers = num_layers or len(layers)
        try:
            row_ids = [layers[f"layer_{l}"]["selected_experts"] for l in range(n_layers)]  # (L, k)
            row_w = [layers[f"layer_{l}"]["selected_probs"] for l in range(n_layers)]
        except KeyError as e:
            raise MoeprintError(f"routing entry {key} lacks {e}; the example file is malformed.") from None
        positions.append(pos)
        tokens.append(full_text[pos])
        segs.append(segments[pos - prompt_len])
        ids.append(row_ids)
        weights.append(row_w)
    weights_array = np.asarray(weights, dtype=np.float32).reshape(len(positions), -1)  # (T, L*k)
    if not np.isfinite(weights_array).all():
        raise ValueError("selected_probs holds NaN or infinite router probabilities")
    return {
        "position": np.asarray(positions, dtype=np.int32),
        "token": tokens,
        "segment": segs,
        "ids": np.asarray(ids, dtype=np.int16).reshape(len(positions), -1),  # (T, L*k)
        "weights": weights_array,
        "num_layers": len(ids[0]) if ids else None,
        "top_k": len(ids[0][0]) if ids else None,
    }, dropped


def _list_column(flat_rows: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """(T, n) array -> list<...>[n] column without going through Python objects."""
    t, n = flat_rows.shape
    offsets = pa.array(np.arange(0, (t + 1) * n, n, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat_rows.reshape(-1), type=arrow_type))


def _summary_rows(summary: dict[str, Any], meta: dict[str, Any], out: dict[str, list]) -> None:
    for segment in ("think", "answer"):
        analytics = summary.get(f"{segment}_expert_analytics") or {}
        num_tokens = float(summary.get(f"num_{segment}_tokens") or 0.0)
        for layer_key, experts in analytics.items():
            layer = int(layer_key.removeprefix("layer_"))
            for order, (expert, values) in enumerate(experts.items()):
                for name, value in meta.items():
                    out[name].append(value)
                out["segment"].append(segment)
                out["num_tokens"].append(num_tokens)
                out["layer"].append(layer)
                out["expert"].append(int(expert))
                out["key_order"].append(order)
                density, frequency = float(values["prob_density"]), float(values["count_frequency"])
                if not (math.isfinite(density) and math.isfinite(frequency) and math.isfinite(num_tokens)):
                    raise ValueError(f"{layer_key} expert {expert} has a NaN or infinite value")
                out["prob_density"].append(density)
                out["count_frequency"].append(frequency)


def _check_layout(layout: Any, path: Path) -> None:
    """map.json is {dataset: {category: {combo: {sample_count, ...}}}}; say where it is not."""
    if not isinstance(layout, dict):
        raise MoeprintError(f"{path} must be a JSON object {{dataset: {{category: {{combo: {{...}}}}}}}}.")
    for dataset, categories in layout.items():
        check_label(dataset, "dataset", str(path))
        if not isinstance(categories, dict):
            raise MoeprintError(f"{path}: dataset {dataset!r} must map categories to combos (a JSON object).")
        for category, by_combo in categories.items():
            check_label(category, "category", str(path))
            if not isinstance(by_combo, dict):
                raise MoeprintError(f"{path}: {dataset}/{category} must map combos to file entries (a JSON object).")
            for combo, info in by_combo.items():
                check_label(combo, "combo", str(path))
                if not isinstance(info, dict) or type(info.get("sample_count")) is not int:
                    raise MoeprintError(f"{path}: {dataset}/{category}/{combo} needs an integer `sample_count`.")


@contextlib.contextmanager
def _published_format(path: Path):
    """A file of the wrong shape (missing keys, wrong types) is one clear error naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise MoeprintError(
            f"{path} is not in the published expert-fingerprinting format ({e.__class__.__name__}: {e})."
        ) from None


@dataclass(frozen=True)
class _Combo:
    """One entry of map.json: a (dataset, category, combo) with its summary and (optional) example file."""

    dataset: str
    category: str
    combo: str
    info: dict[str, Any]

    @property
    def folder(self) -> str:
        return f"{self.dataset}/{self.category}"

    def file(self, data_dir: Path, key: str, default_suffix: str) -> Path:
        return confined(data_dir, self.info.get(key, f"{self.folder}/{self.combo}{default_suffix}"), "map.json")


@dataclass(frozen=True)
class _Source:
    """The published layout at `path`, checked before anything is written."""

    path: Path
    data_dir: Path
    layout: dict[str, Any]
    domains_path: Path
    domains_map: dict[str, Any]
    folder_domain: dict[str, str]
    combos: list[_Combo]


def _read_source(src: Path, domains_map_path: str | Path | None) -> _Source:
    if not src.is_dir():
        raise MoeprintError(f"source directory {src} does not exist.")
    data_dir = src / "data" if (src / "data").is_dir() else src
    if not json_exists(data_dir / "map.json"):
        raise MoeprintError(f"{src} has no data/map.json; is it the published expert-fingerprinting layout?")
    layout = read_json(data_dir / "map.json")
    _check_layout(layout, data_dir / "map.json")
    domains_path = Path(domains_map_path) if domains_map_path else src / "domains.json"
    domains_map = read_json(domains_path)
    if not isinstance(domains_map, dict):
        raise MoeprintError(f"{domains_path} must be a JSON object {{domain: [folders]}}.")
    combos = [
        _Combo(dataset, category, combo, info)
        for dataset, categories in layout.items()
        for category, by_combo in categories.items()
        for combo, info in by_combo.items()
    ]
    if not combos:
        raise MoeprintError(f"no dataset/category folders of {src} were selected.")
    return _Source(src, data_dir, layout, domains_path, domains_map, _domain_of_folder(domains_map), combos)


@dataclass
class _Tally:
    """What the imported examples have in common, and what was skipped."""

    num_layers: int | None = None
    top_k: int | None = None
    max_expert: int = -1
    n_tokens: int = 0
    missing_examples: int = 0
    missing_summaries: int = 0
    dropped_rows: int = 0

    def add_shape(self, cols: dict[str, Any], example_file: Path) -> None:
        if self.num_layers is None:
            self.num_layers, self.top_k = cols["num_layers"], cols["top_k"]
        elif (cols["num_layers"], cols["top_k"]) != (self.num_layers, self.top_k):
            raise MoeprintError(
                f"{example_file} has {cols['num_layers']} layers x top-{cols['top_k']}, "
                f"others {self.num_layers} x top-{self.top_k}."
            )
        self.max_expert = max(self.max_expert, int(cols["ids"].max()))
        self.n_tokens += len(cols["position"])


class _TraceParts:
    """Trace rows buffered into `traces/part-*.parquet` files of about ROWS_PER_PART rows."""

    def __init__(self, run: RunDir):
        self.run, self.schema = run, trace_schema(with_token_text=True)
        self.pending: list[pa.RecordBatch] = []
        self.rows = self.part = 0

    def add(self, prompt_id: str, domain: str, cols: dict[str, Any]) -> None:
        t = len(cols["position"])
        columns = [
            pa.array([prompt_id] * t, pa.string()),
            pa.array([domain] * t, pa.string()),
            pa.array(cols["position"], pa.int32()),
            pa.array(np.full(t, -1, dtype=np.int32)),  # token ids are unknown: the `token` column has the strings
            pa.array(np.ones(t, dtype=bool)),
            pa.array(cols["segment"], pa.string()),
            _list_column(cols["ids"], pa.int16()),
            _list_column(cols["weights"], pa.float32()),
            pa.array(cols["token"], pa.string()),
        ]
        self.pending.append(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.rows += t
        if self.rows >= ROWS_PER_PART:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            write_trace_part(self.run, self.part, pa.Table.from_batches(self.pending, self.schema))
            self.part += 1
            self.pending, self.rows = [], 0


def _import_summary(source: _Source, entry: _Combo, domain: str, summaries: dict[str, list], tally: _Tally) -> None:
    summary_file = entry.file(source.data_dir, "summary_file_path", ".json")
    if not json_exists(summary_file):
        tally.missing_summaries += 1
        return
    meta = {
        "dataset": entry.dataset,
        "category": entry.category,
        "combo": entry.combo,
        "domain": domain,
        "sample_count": int(entry.info["sample_count"]),
    }
    with _published_format(summary_file):
        _summary_rows(read_json(summary_file), meta, summaries)


def _import_example(
    source: _Source, entry: _Combo, domain: str, prompts: dict[str, list], traces: _TraceParts, tally: _Tally
) -> None:
    example_file = entry.file(source.data_dir, "examples_file_path", "_examples.json")
    if not json_exists(example_file):
        tally.missing_examples += 1
        return
    example = read_json(example_file)
    with _published_format(example_file):
        cols, dropped = _example_rows(example, tally.num_layers)
        prompt_len = len(example["full_text"]) - len(example["generated_only"])
    tally.dropped_rows += dropped
    if cols["num_layers"] is None:
        return
    tally.add_shape(cols, example_file)
    prompt_id = f"{entry.folder}/{entry.combo}"
    row = {
        "prompt_id": prompt_id,
        "domain": domain,
        "source": entry.dataset,
        "category": entry.category,
        "text": example.get("original_prompt"),
        "messages": None,
        "rendered": "".join(example["full_text"][:prompt_len]),
        "completion": "".join(example["generated_only"]),
        "finished": bool(example.get("finished_successfully")),
        "n_prompt_tokens": prompt_len,
        "n_generated_tokens": len(example["generated_only"]),
    }
    for name, value in row.items():
        prompts[name].append(value)
    traces.add(prompt_id, domain, cols)


def _manifest(source: _Source, tally: _Tally, prompts: dict[str, list], summaries: dict[str, list]) -> RunManifest:
    adapter, checkpoint = _source_model()
    max_expert = max([tally.max_expert, *summaries["expert"]])
    return RunManifest(
        kind="imported",
        model=ModelIdentity(
            name=checkpoint.hub_id if tally.num_layers == checkpoint.num_layers else "unknown",
            sha256=None,
            architecture=adapter.architectures[0],
        ),
        num_layers=tally.num_layers,
        num_experts=max_expert + 1,
        top_k=tally.top_k,
        domains=tuple(sorted(set(prompts["domain"]) | set(summaries["domain"]))),
        n_prompts=len(prompts["prompt_id"]),
        n_tokens=tally.n_tokens,
        has_logits=False,
        has_norms=False,
        has_token_ids=False,
        prompt_suite_sha256=hashlib.sha256(json.dumps(source.layout, sort_keys=True).encode()).hexdigest(),
        generation=GenerationSettings(max_new_tokens=512, do_sample=False),
        versions=software_versions(),
        source=ImportSource(
            path=str(source.path.resolve()),
            domains_map=str(source.domains_path.resolve()),
            combos=len(source.combos),
            missing_examples=tally.missing_examples,
            missing_summaries=tally.missing_summaries,
            dropped_rows=tally.dropped_rows,
        ),
    )


def import_fingerprinting(
    src: str | Path,
    out: str | Path,
    domains_map_path: str | Path | None = None,
    folders: set[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> RunManifest:
    """Import the published layout at `src` into the run directory `out`; returns the manifest.

    `folders` (optional, "dataset/category") restricts which example files are read (e.g. for tests);
    the summaries of every folder are always imported, so the reference rankings stay complete.
    Missing example or summary files are counted, reported in the manifest and skipped.
    """
    source = _read_source(Path(src), domains_map_path)
    prompts: dict[str, list] = {f.name: [] for f in PROMPTS_SCHEMA}
    summaries: dict[str, list] = {f.name: [] for f in SUMMARY_SCHEMA}
    tally = _Tally()
    with atomic_directory(out, overwrite=overwrite, kind="imported") as tmp:
        run = RunDir(tmp)
        run.traces_dir.mkdir()
        traces = _TraceParts(run)
        for entry in track(source.combos, "import (files)", progress):
            domain = source.folder_domain.get(entry.folder, OTHER_DOMAIN)
            _import_summary(source, entry, domain, summaries, tally)
            if folders is None or entry.folder in folders:
                _import_example(source, entry, domain, prompts, traces, tally)
        traces.flush()
        if tally.num_layers is None:
            raise MoeprintError(f"no example file with routing data was found under {source.data_dir}.")
        write_prompts_table(run, pa.Table.from_pydict(prompts, PROMPTS_SCHEMA).to_pylist())
        published = tmp / "published"
        published.mkdir()
        pq.write_table(pa.Table.from_pydict(summaries, SUMMARY_SCHEMA), published / "summaries.parquet")
        atomic_write_json(published / "domains.json", source.domains_map)
        manifest = _manifest(source, tally, prompts, summaries)
        run.write_manifest(manifest)
    return manifest
