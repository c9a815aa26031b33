"""Benchmark prompt loaders: GPQA, MMLU, MMLU-Pro, SORRY-Bench, Tulu-3 persona IF, Polyglot-or-Not.

Each loader reads the Hugging Face hub through `datasets`, or a local copy (a .csv/.jsonl/.json/.parquet
file or a directory of them) with the dataset's own columns. Prompts are phrased as in the reference
project's published routing traces (single user turn; multiple choice as "Answer the question by using one of the
given options"), so a recording here is comparable with them. `source` is the published dataset
folder name (e.g. `mmlu_test`, `gpqa_diamond`), `category` its subject/category folder name.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.prompts.domains import (
    GENERAL,
    MMLU_PRO_CATEGORY_DOMAIN,
    MMLU_SUBJECT_DOMAIN,
    SORRY_BENCH_CATEGORIES,
)
from moeprint.types import PromptRecord

LETTERS = "ABCDEFGHIJKLMNOP"
_TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


def _user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def multiple_choice(question: str, options: list[str]) -> str:
    lines = [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return (
        "Answer the question by using one of the given options.\n\n"
        f"Question:\t{question.strip()}\n\n"
        "Answer such that you select one of the given options:\n" + "\n".join(lines)
    )


def _stable_rng(key: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


# ---- converters: one row of the dataset's own schema -> PromptRecord --------------------------


def _gpqa(row: dict[str, Any], source: str, index: int) -> PromptRecord:
    record_id = str(row.get("Record ID") or index)
    options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    options = [str(o).strip() for o in options]
    _stable_rng(record_id).shuffle(options)  # the correct answer must not always be A
    return PromptRecord(
        prompt_id=f"{source}:{record_id}",
        domain="science",  # every GPQA subdomain is biology, chemistry or physics
        source=source,
        category=str(row.get("Subdomain", "")).strip(),
        messages=_user(multiple_choice(row["Question"], options)),
    )


def _mmlu(row: dict[str, Any], source: str, index: int) -> PromptRecord:
    subject = str(row["subject"])
    return PromptRecord(
        prompt_id=f"{source}:{subject}:{index}",
        domain=MMLU_SUBJECT_DOMAIN.get(subject, GENERAL),
        source=source,
        category=subject,
        messages=_user(multiple_choice(row["question"], [str(c) for c in row["choices"]])),
    )


def _mmlu_pro(row: dict[str, Any], source: str, index: int) -> PromptRecord:
    category = str(row["category"])
    options = [str(o) for o in row["options"] if str(o) != "N/A"]
    return PromptRecord(
        prompt_id=f"{source}:{row.get('question_id', index)}",
        domain=MMLU_PRO_CATEGORY_DOMAIN.get(category, GENERAL),
        source=source,
        category=category,
        messages=_user(multiple_choice(row["question"], options)),
    )


def _sorry_bench(row: dict[str, Any], source: str, index: int) -> PromptRecord | None:
    style = str(row.get("prompt_style", "base"))
    if style != "base":  # the linguistic mutations are separate benchmarks
        return None
    raw = str(row["category"]).strip()
    category = SORRY_BENCH_CATEGORIES[int(raw) - 1] if raw.isdigit() and 0 < int(raw) <= 45 else raw
    turns = row["turns"]
    turns = [turns] if isinstance(turns, str) else list(turns)
    return PromptRecord(
        prompt_id=f"{source}:{row.get('question_id', index)}",
        domain="safety",
        source=source,
        category=category,
        messages=_user(str(turns[0])),
    )


def _tulu3_persona_if(row: dict[str, Any], source: str, index: int) -> PromptRecord:
    text = row.get("prompt")
    if not text:  # fall back to the first user turn of `messages`
        text = next(m["content"] for m in row["messages"] if m["role"] == "user")
    return PromptRecord(
        prompt_id=f"{source}:{row.get('id', index)}",
        domain="instruction_following",
        source=source,
        category="instruction-following",
        messages=_user(str(text)),
    )


def _polyglot(row: dict[str, Any], source: str, index: int) -> PromptRecord:
    false = row["false"]
    if isinstance(false, str) and false.startswith("["):  # some dumps store the list as its repr
        false = ast.literal_eval(false)
    if isinstance(false, (list, tuple)):
        false = false[0]
    key = str(row.get("dataset_id") or index)
    options = [str(row["true"]), str(false)]
    _stable_rng(key).shuffle(options)
    text = (
        f"Choose one of the two options given the question: {row['stem']}\nOption 1:{options[0]}\nOption 2:{options[1]}"
    )
    return PromptRecord(
        prompt_id=f"{source}:{key}",
        domain=GENERAL,  # the reference pools fact completion into `all` only
        source=source,
        category="fact_checking",
        messages=_user(text),
    )


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub_id: str
    hub_parts: tuple[tuple[str | None, str, str], ...]  # (config, split, source) loaded from the hub
    convert: Callable[[dict[str, Any], str, int], PromptRecord | None]
    local_source: Callable[[Path], str]  # source name for a local file
    columns: tuple[str, ...]  # columns a local file must have
    gated: bool = False
    file_prefixes: tuple[str, ...] = ()  # in a local folder, read only files named so (one file per language)


def _split_source(prefix: str) -> Callable[[Path], str]:
    def source(path: Path) -> str:
        name = path.name.lower()
        for split in ("validation", "test", "dev", "train"):
            if split in name:
                return f"{prefix}_{split}"
        return prefix

    return source


def _gpqa_source(path: Path) -> str:
    stem = path.stem.lower()
    for variant in ("diamond", "main", "extended", "experts"):
        if variant in stem:
            return f"gpqa_{variant}"
    return "gpqa"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "gpqa",
            "Idavidrein/gpqa",
            tuple((c, "train", c) for c in ("gpqa_diamond", "gpqa_main", "gpqa_extended")),
            _gpqa,
            _gpqa_source,
            ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
            gated=True,
        ),
        Benchmark(
            "mmlu",
            "cais/mmlu",
            tuple(("all", s, f"mmlu_{s}") for s in ("test", "validation", "dev")),
            _mmlu,
            _split_source("mmlu"),
            ("question", "subject", "choices"),
        ),
        Benchmark(
            "mmlu_pro",
            "TIGER-Lab/MMLU-Pro",
            tuple((None, s, f"mmlu_pro_{s}") for s in ("test", "validation")),
            _mmlu_pro,
            _split_source("mmlu_pro"),
            ("question", "options", "category"),
        ),
        Benchmark(
            "sorry_bench",
            "sorry-bench/sorry-bench-202406",
            ((None, "train", "sorry_bench_base"),),
            _sorry_bench,
            lambda p: "sorry_bench_base",
            ("category", "turns"),
            gated=True,
        ),
        Benchmark(
            "tulu3_persona_if",
            "allenai/tulu-3-sft-personas-instruction-following",
            ((None, "train", "tulu3_persona_if"),),
            _tulu3_persona_if,
            lambda p: "tulu3_persona_if",
            ("id",),
        ),
        Benchmark(
            "polyglot",
            "Polyglot-or-Not/Fact-Completion",
            ((None, "English", "Polyglot-or-Not_Fact-Completion"),),
            _polyglot,
            lambda p: "Polyglot-or-Not_Fact-Completion",
            ("stem", "true", "false"),
            file_prefixes=("English",),
        ),
    )
}


def load_benchmark(name: str, path: str | Path | None = None) -> list[PromptRecord]:
    """All prompts of one benchmark, from a local copy (`path`) or the hub."""
    if name not in BENCHMARKS:
        raise MoeprintError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)}).")
    bench = BENCHMARKS[name]
    prompts: list[PromptRecord] = []
    parts = _local_parts(bench, Path(path)) if path else _hub_parts(bench)
    for source, rows in parts:
        for index, row in enumerate(rows):
            try:
                record = bench.convert(row, source, index)
            except (KeyError, TypeError, ValueError, IndexError, StopIteration, SyntaxError) as e:
                raise MoeprintError(
                    f"{name}: row {index} of {source} does not have the expected schema ({e!r})."
                ) from None
            if record is not None:
                prompts.append(record)
    if not prompts:
        raise MoeprintError(f"{name}: no prompts found{f' in {path}' if path else ''}.")
    return prompts


# A hub snapshot names its data files `<split>-00000-of-00001[-hash].parquet`.
_HUB_FILE = re.compile(r"(?P<split>[A-Za-z][A-Za-z0-9_]*)-\d{5}-of-\d{5}")


def local_files(bench: Benchmark, path: Path) -> list[tuple[Path, str]]:
    """(file, source) of a local copy, read the way the hub path reads the dataset: in a folder laid out
    like the hub's, only the hub config's subfolder (MMLU's `all/`, not its per-subject copies) and only
    the splits the hub path loads (no `auxiliary_train`; Polyglot-or-Not's `English` only). Other files
    are read unless their name marks a split the hub path skips; their source is named by that split word.
    A single file is read as given."""
    if path.is_file():
        return [(path, bench.local_source(path))]
    configs = [path / c for c in dict.fromkeys(c for c, _, _ in bench.hub_parts if c) if (path / c).is_dir()]
    files = sorted(p for root in configs or [path] for p in root.rglob("*") if p.suffix.lower() in _TABLE_SUFFIXES)
    wanted = {split: source for _, split, source in bench.hub_parts}
    out = []
    for file in files:
        if bench.file_prefixes and not file.name.startswith(bench.file_prefixes):
            continue
        hub = _HUB_FILE.match(file.name)
        if hub is not None:
            if hub["split"] in wanted:
                out.append((file, wanted[hub["split"]]))
            continue
        source = bench.local_source(file)
        if source in wanted.values() or not source.endswith(("_train", "_validation", "_test", "_dev")):
            out.append((file, source))
    return out


def _local_parts(bench: Benchmark, path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    if not path.exists():
        raise MoeprintError(f"{bench.name}: local copy {path} does not exist.")
    files = local_files(bench, path)
    if not files:
        splits = ", ".join(split for _, split, _ in bench.hub_parts)
        raise MoeprintError(f"{bench.name}: no .csv/.jsonl/.json/.parquet files of split(s) {splits} under {path}.")
    for file, source in files:
        rows = read_table(file)
        missing = [c for c in bench.columns if rows and c not in rows[0]]
        if missing:
            raise MoeprintError(f"{file} lacks the {bench.name} column(s) {', '.join(missing)}.")
        yield source, rows


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a .csv/.jsonl/.json/.parquet file as dicts (pyarrow readers)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    try:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
        elif suffix == ".json" and path.read_text(encoding="utf-8").lstrip().startswith("["):
            import json

            return json.loads(path.read_text(encoding="utf-8"))
        else:
            table = pajson.read_json(path)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, ValueError) as e:
        raise MoeprintError(f"cannot read {path} ({e.__class__.__name__}: {str(e).splitlines()[0]}).") from None
    return table.to_pylist()


def _hub_parts(bench: Benchmark) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    try:
        import datasets
    except ImportError:
        raise MoeprintError(
            f"loading {bench.name} from the hub needs the `datasets` package (pip install datasets), "
            f"or pass a local copy as {bench.name}:PATH."
        ) from None
    for config, split, source in bench.hub_parts:
        try:
            ds = datasets.load_dataset(bench.hub_id, config, split=split)
        except Exception as e:  # network, gating, missing split: all end the same way for the user
            gated = " (gated: accept its terms on the hub and log in)" if bench.gated else ""
            raise MoeprintError(
                f"could not load {bench.hub_id}{f'/{config}' if config else ''} [{split}] from the hub{gated}: "
                f"{e.__class__.__name__}; pass a local copy as {bench.name}:PATH."
            ) from None
        yield source, list(ds)
