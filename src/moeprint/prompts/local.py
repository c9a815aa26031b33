"""Prompts from a local JSONL or CSV file.

JSONL: one object per line with `text` (raw text) or `messages` (a chat: list of {role, content}),
`domain`, and optionally `category` and `id`. A line `{"declare_domains": ["poetry"]}` allows
extra domains beyond the known set. CSV: columns `text` (or `messages` as a JSON string), `domain`,
optional `category`, `id`; a first line `# declare_domains: poetry, cooking` declares extra domains.
Without `id`, a prompt's id is `<file stem>:<1-based row number>` (stable across runs).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.atomic import iter_jsonl
from moeprint.io.names import check_label, check_prompt_id
from moeprint.prompts.domains import KNOWN_DOMAINS, check_domain_name, check_known
from moeprint.types import PromptRecord

DECLARE_KEY = "declare_domains"


def read_prompt_file(path: str | Path, source: str | None = None) -> tuple[list[PromptRecord], frozenset[str]]:
    """(prompts, allowed domains) from a .jsonl or .csv file; a clear error for any bad row."""
    path = Path(path)
    if not path.is_file():
        raise MoeprintError(f"prompt file {path} does not exist.")
    source = source or path.stem
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows, declared = _jsonl_rows(path)
    elif path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MoeprintError(f"cannot read prompt file {path} ({e.__class__.__name__}).") from None
        rows, declared = _csv_rows(text, path)
    else:
        raise MoeprintError(f"prompt file {path} must end in .jsonl or .csv.")
    allowed = frozenset(KNOWN_DOMAINS) | declared
    prompts = [_row_to_prompt(row, line, path, source, allowed) for line, row in rows]
    if not prompts:
        raise MoeprintError(f"prompt file {path} contains no prompts.")
    return prompts, allowed


def _jsonl_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], frozenset[str]]:
    rows, declared = [], set()
    for line_no, obj in iter_jsonl(path):
        if DECLARE_KEY in obj:
            names = obj[DECLARE_KEY]
            if not isinstance(names, list):
                raise MoeprintError(f"{path}:{line_no}: {DECLARE_KEY} must be a list of names.")
            declared |= {check_domain_name(n, f"{path}:{line_no}: ") for n in names}
            continue
        rows.append((line_no, obj))
    return rows, frozenset(declared)


def _csv_rows(text: str, path: Path) -> tuple[list[tuple[int, dict[str, Any]]], frozenset[str]]:
    declared: set[str] = set()
    lines = text.splitlines(keepends=True)
    skip = 0
    if lines and lines[0].lstrip().startswith("#"):
        head = lines[0].lstrip("# \t").strip()
        if head.startswith(DECLARE_KEY):
            names = head.split(":", 1)[1] if ":" in head else ""
            declared = {check_domain_name(n.strip(), f"{path}:1: ") for n in names.split(",") if n.strip()}
        skip = 1
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    if reader.fieldnames is None:
        return [], frozenset(declared)
    if "domain" not in reader.fieldnames or not ({"text", "messages"} & set(reader.fieldnames)):
        raise MoeprintError(f"{path} needs a `domain` column and a `text` or `messages` column.")
    rows = []
    try:
        for i, row in enumerate(reader):
            if None in row:
                raise MoeprintError(f"{path}: row {i + 1} has more fields than the header.")
            row = {k: v for k, v in row.items() if v not in (None, "")}
            if "messages" in row:
                try:
                    row["messages"] = json.loads(row["messages"])
                except json.JSONDecodeError:
                    raise MoeprintError(f"{path}: row {i + 1}: `messages` is not valid JSON.") from None
            rows.append((i + 1 + skip + 1, row))  # file line number (header is line 1 + skip)
    except csv.Error as e:
        raise MoeprintError(f"{path} is not valid CSV ({e}).") from None
    return rows, frozenset(declared)


def _row_to_prompt(row: dict[str, Any], line: int, path: Path, source: str, allowed: frozenset[str]) -> PromptRecord:
    where = f"{path}:{line}: "
    domain = row.get("domain")
    if not isinstance(domain, str) or not domain:
        raise MoeprintError(f"{where}missing `domain`.")
    check_known(domain, allowed, where)
    text, messages = row.get("text"), row.get("messages")
    if (text is None) == (messages is None):
        raise MoeprintError(f"{where}needs exactly one of `text` and `messages`.")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise MoeprintError(f"{where}`text` must be a non-empty string.")
    if messages is not None:
        messages = _check_messages(messages, where)
    prompt_id = check_prompt_id(str(row.get("id", f"{source}:{line}")), where)
    category = str(row.get("category", ""))
    if category:
        check_label(category, "category", where)
    return PromptRecord(
        prompt_id=prompt_id,
        domain=domain,
        source=source,
        category=category,
        messages=messages,
        text=text,
    )


def _check_messages(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise MoeprintError(f"{where}`messages` must be a non-empty list of {{role, content}} objects.")
    out = []
    for m in messages:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise MoeprintError(f"{where}every message needs string `role` and `content`.")
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)
