"""Prompt sources: local JSONL/CSV files, benchmark loaders, and the built-in suite.

    load_prompts(["builtin"])                 the small offline suite shipped with moeprint
    load_prompts(["my.jsonl"])                a local file (see moeprint.prompts.local)
    load_prompts(["mmlu:/data/mmlu"])         a benchmark from a local copy in its own schema
    load_prompts(["gpqa"])                    a benchmark from the Hugging Face hub (needs `datasets`)

Domain rule: every prompt's domain must be one of KNOWN_DOMAINS or declared by its file; a `domains`
filter may only name domains that are known or declared by one of the sources (a typo is an error,
not an empty run). Prompt ids must be unique across all sources.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.manifest import DEFAULT_DATE, TemplateInputs  # the manifest records them
from moeprint.prompts.benchmarks import BENCHMARKS, load_benchmark
from moeprint.prompts.domains import KNOWN_DOMAINS, check_known
from moeprint.prompts.local import read_prompt_file
from moeprint.types import PromptRecord

BUILTIN_SUITE = Path(__file__).parent / "builtin" / "suite.jsonl"

__all__ = [
    "BENCHMARKS",
    "DEFAULT_DATE",
    "KNOWN_DOMAINS",
    "TemplateInputs",
    "load_prompts",
    "render_prompt",
    "rendered_sha256",
    "load_source",
]


@contextlib.contextmanager
def _clock_at(date: str):
    """transformers' `strftime_now` reads `datetime.now()` of its chat-template module; within this
    block that clock shows midnight of `date` (rendering is single-threaded)."""
    from transformers.utils import chat_template_utils as ctu

    real = getattr(ctu, "datetime", None)
    if real is not dt.datetime:
        raise MoeprintError(
            "this transformers version renders chat-template dates in a way moeprint cannot fix; "
            "upgrade moeprint or use `text` prompts."
        )
    fixed = dt.datetime.fromisoformat(date)

    class _FixedClock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed if tz is None else fixed.replace(tzinfo=tz)

    ctu.datetime = _FixedClock
    try:
        yield
    finally:
        ctu.datetime = real


def rendered_sha256(texts: Iterable[str]) -> str:
    """sha256 of the rendered prompt texts in order: the text the model saw, compared on resume and merge."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def load_source(source: str) -> tuple[list[PromptRecord], frozenset[str]]:
    """(prompts, allowed domains) of one source string: `builtin`, a file, or `BENCHMARK[:path]`."""
    if source == "builtin":
        return read_prompt_file(BUILTIN_SUITE, source="builtin")
    path = Path(source)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".csv") and source.split(":", 1)[0] not in BENCHMARKS:
        return read_prompt_file(path)
    name, _, local = source.partition(":")
    if name in BENCHMARKS:
        return load_benchmark(name, local or None), frozenset(KNOWN_DOMAINS)
    raise MoeprintError(
        f"prompt source {source!r} is not a .jsonl/.csv file, `builtin`, or a benchmark "
        f"({', '.join(BENCHMARKS)}, optionally NAME:LOCAL_PATH)."
    )


def load_prompts(
    sources: str | Sequence[str], domains: Iterable[str] | None = None, limit: int | None = None
) -> list[PromptRecord]:
    """Prompts of all `sources` in order, filtered to `domains`, at most `limit` (first ones)."""
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise MoeprintError("no prompt source given.")
    prompts: list[PromptRecord] = []
    allowed: set[str] = set()
    for source in sources:
        records, ok = load_source(source)
        prompts.extend(records)
        allowed |= ok
    seen: set[str] = set()
    for p in prompts:
        if p.prompt_id in seen:
            raise MoeprintError(f"prompt id {p.prompt_id!r} occurs twice; prompt ids must be unique.")
        seen.add(p.prompt_id)
    if domains is not None:
        wanted = {check_known(d, frozenset(allowed), "--domains: ") for d in domains}
        prompts = [p for p in prompts if p.domain in wanted]
        if not prompts:
            raise MoeprintError(f"no prompts of domain(s) {', '.join(sorted(wanted))} in the given source(s).")
    if limit is not None:
        if limit < 1:
            raise MoeprintError("--limit must be at least 1.")
        prompts = prompts[:limit]
    return prompts


def render_prompt(
    tokenizer: Any,
    prompt: PromptRecord,
    reasoning_effort: str | None = None,
    template: TemplateInputs = TemplateInputs(),
) -> str:
    """Exactly the text the model sees: chats go through the tokenizer's chat template (with
    `reasoning_effort` for templates that read it) with the date of `template`, raw text is used as is."""
    if prompt.text is not None:
        return prompt.text
    if not getattr(tokenizer, "chat_template", None):
        raise MoeprintError(
            f"prompt {prompt.prompt_id!r} is a chat but the model's tokenizer has no chat template; use `text` prompts."
        )
    extra = {"reasoning_effort": reasoning_effort} if reasoning_effort else {}
    date_string = dt.date.fromisoformat(template.date).strftime("%d %b %Y")  # Llama 3's format
    with _clock_at(template.date):
        return tokenizer.apply_chat_template(
            [dict(m) for m in prompt.messages],
            tokenize=False,
            add_generation_prompt=True,
            date_string=date_string,
            **extra,
        )
