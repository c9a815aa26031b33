"""Import the published "GPT-OSS MoE Expert Fingerprinting" data as a normal run directory.

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
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json, json_exists, read_json
from moeprint.io.manifest import GenerationSettings, ImportSource, ModelIdentity, RunManifest
from moeprint.io.names import check_domain, check_label, confined
from moeprint.io.run import PROMPTS_SCHEMA, RunDir, software_versions, trace_schema
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

# Message terminators of the harmony format. The token that ends a message belongs to no channel.
_END_TOKENS = {"<|end|>", "<|return|>", "<|call|>"}
_CHANNEL_SEGMENT = {"analysis": "think", "final": "answer"}


def segment_generated_tokens(tokens: list[str]) -> list[str]:
    """The segment of each generated token from the harmony channel markers.

    A message runs from its start (the generation start or `<|start|>`) to its terminator; every token
    of it, header included, gets its channel's segment: analysis -> think, final -> answer, any other
    or no channel -> generated. Terminators (`<|end|>`) get `generated`. This equals the reference
    project's think/answer split on every finished example (checked against its summaries).
    """
    segments = ["generated"] * len(tokens)
    start = 0
    while start < len(tokens):
        end = start
        while end < len(tokens) and tokens[end] not in _END_TOKENS:
            end += 1
        channel = None
        for i in range(start, end - 1):
            if tokens[i] == "<|channel|>":
                channel = tokens[i + 1]
                break
        seg = _CHANNEL_SEGMENT.get(channel, "generated")
        for i in range(start, end):
            segments[i] = seg
        start = end + 1  # the terminator keeps "generated"
    return segments


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
    src = Path(src)
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
    folder_domain = _domain_of_folder(domains_map)

    combos = [
        (dataset, category, combo, info)
        for dataset, categories in layout.items()
        for category, by_combo in categories.items()
        for combo, info in by_combo.items()
    ]
    if not combos:
        raise MoeprintError(f"no dataset/category folders of {src} were selected.")

    prompts: dict[str, list] = {f.name: [] for f in PROMPTS_SCHEMA}
    summaries: dict[str, list] = {f.name: [] for f in SUMMARY_SCHEMA}
    missing_examples, missing_summaries, dropped_rows = [], [], 0
    num_layers = top_k = None
    max_expert = -1
    n_tokens = 0
    schema = trace_schema(with_token_text=True)

    with atomic_directory(out, overwrite=overwrite, kind="imported") as tmp:
        run = RunDir(tmp)
        run.traces_dir.mkdir()
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        part = 0

        def flush() -> None:
            nonlocal pending, pending_rows, part
            if pending:
                pq.write_table(pa.Table.from_batches(pending, schema), run.traces_dir / f"part-{part:05d}.parquet")
                part += 1
                pending, pending_rows = [], 0

        for dataset, category, combo, info in track(combos, "import (files)", progress):
            folder = f"{dataset}/{category}"
            domain = folder_domain.get(folder, OTHER_DOMAIN)
            summary_file = confined(data_dir, info.get("summary_file_path", f"{folder}/{combo}.json"), "map.json")
            if json_exists(summary_file):
                meta = {
                    "dataset": dataset,
                    "category": category,
                    "combo": combo,
                    "domain": domain,
                    "sample_count": int(info["sample_count"]),
                }
                with _published_format(summary_file):
                    _summary_rows(read_json(summary_file), meta, summaries)
            else:
                missing_summaries.append(str(summary_file))
            if folders is not None and folder not in folders:
                continue
            example_file = confined(
                data_dir, info.get("examples_file_path", f"{folder}/{combo}_examples.json"), "map.json"
            )
            if not json_exists(example_file):
                missing_examples.append(str(example_file))
                continue
            example = read_json(example_file)
            with _published_format(example_file):
                cols, dropped = _example_rows(example, num_layers)
                prompt_len = len(example["full_text"]) - len(example["generated_only"])
            dropped_rows += dropped
            if cols["num_layers"] is None:
                continue
            if num_layers is None:
                num_layers, top_k = cols["num_layers"], cols["top_k"]
            elif (cols["num_layers"], cols["top_k"]) != (num_layers, top_k):
                raise MoeprintError(
                    f"{example_file} has {cols['num_layers']} layers x top-{cols['top_k']}, "
                    f"others {num_layers} x top-{top_k}."
                )
            max_expert = max(max_expert, int(cols["ids"].max()))
            prompt_id = f"{folder}/{combo}"
            t = len(cols["position"])
            n_tokens += t
            prompts["prompt_id"].append(prompt_id)
            prompts["domain"].append(domain)
            prompts["source"].append(dataset)
            prompts["category"].append(category)
            prompts["text"].append(example.get("original_prompt"))
            prompts["messages"].append(None)
            prompts["rendered"].append("".join(example["full_text"][:prompt_len]))
            prompts["completion"].append("".join(example["generated_only"]))
            prompts["finished"].append(bool(example.get("finished_successfully")))
            prompts["n_prompt_tokens"].append(prompt_len)
            prompts["n_generated_tokens"].append(len(example["generated_only"]))
            pending.append(
                pa.RecordBatch.from_arrays(
                    [
                        pa.array([prompt_id] * t, pa.string()),
                        pa.array([domain] * t, pa.string()),
                        pa.array(cols["position"], pa.int32()),
                        pa.array(np.full(t, -1, dtype=np.int32)),
                        pa.array(np.ones(t, dtype=bool)),
                        pa.array(cols["segment"], pa.string()),
                        _list_column(cols["ids"], pa.int16()),
                        _list_column(cols["weights"], pa.float32()),
                        pa.array(cols["token"], pa.string()),
                    ],
                    schema=schema,
                )
            )
            pending_rows += t
            if pending_rows >= ROWS_PER_PART:
                flush()
        flush()
        if num_layers is None:
            raise MoeprintError(f"no example file with routing data was found under {data_dir}.")

        pq.write_table(pa.Table.from_pydict(prompts, PROMPTS_SCHEMA), run.prompts_path)
        published = tmp / "published"
        published.mkdir()
        pq.write_table(pa.Table.from_pydict(summaries, SUMMARY_SCHEMA), published / "summaries.parquet")
        atomic_write_json(published / "domains.json", domains_map)
        if summaries["expert"]:
            max_expert = max(max_expert, max(summaries["expert"]))
        domains = sorted(set(prompts["domain"]) | set(summaries["domain"]))
        manifest = RunManifest(
            kind="imported",
            model=ModelIdentity(
                name="openai/gpt-oss-20b" if num_layers == 24 else "unknown",
                sha256=None,
                architecture="GptOssForCausalLM",
            ),
            num_layers=num_layers,
            num_experts=max_expert + 1,
            top_k=top_k,
            domains=tuple(domains),
            n_prompts=len(prompts["prompt_id"]),
            n_tokens=n_tokens,
            has_logits=False,
            has_norms=False,
            has_token_ids=False,
            prompt_suite_sha256=hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest(),
            generation=GenerationSettings(max_new_tokens=512, do_sample=False),
            versions=software_versions(),
            source=ImportSource(
                path=str(src.resolve()),
                domains_map=str(domains_path.resolve()),
                combos=len(combos),
                missing_examples=len(missing_examples),
                missing_summaries=len(missing_summaries),
                dropped_rows=dropped_rows,
            ),
        )
        run.write_manifest(manifest)
    return manifest
