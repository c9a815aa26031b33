"""Evaluation inputs: held-out texts and multiple-choice questions from local JSONL files, and generation
prompts from any source of the record stage (moeprint.prompts).

Every reader returns plain frozen records and raises MoeprintError (one sentence) for a missing
file, bad JSON or a row without the fields it needs. Nothing here touches a model.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moeprint.errors import MoeprintError
from moeprint.io.atomic import iter_jsonl
from moeprint.types import ALL, PromptRecord


@dataclass(frozen=True)
class EvalText:
    """One held-out text; perplexity is reported per `domain`."""

    text_id: str
    domain: str
    text: str


@dataclass(frozen=True)
class ChoiceQuestion:
    """A multiple-choice question: `context` is scored with each of `choices` as its continuation."""

    question_id: str
    domain: str
    question: str
    choices: tuple[str, ...]
    answer: int


def prompt_words(prompt: PromptRecord) -> str:
    """The words of a prompt (for overlap checks and samples), whatever its form."""
    if prompt.text is not None:
        return prompt.text
    return "\n".join(m.get("content", "") for m in prompt.messages or ())


def read_jsonl(path: str | Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a clear error for a missing, empty or bad file."""
    path = Path(path)
    if not path.is_file():
        raise MoeprintError(f"{what} file {path} does not exist.")
    n = 0
    for lineno, row in iter_jsonl(path):
        n += 1
        yield lineno, row
    if n == 0:
        raise MoeprintError(f"{what} file {path} has no rows.")


def _domain(row: dict[str, Any], default: str = ALL) -> str:
    value = row.get("domain", row.get("subject", default))
    return str(value) if value not in (None, "") else default


def load_texts(path: str | Path) -> list[EvalText]:
    """Rows `{"text": str, "domain": str, "id"?: str}`."""
    out = []
    for lineno, row in read_jsonl(path, "texts"):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise MoeprintError(f"{path} line {lineno} has no non-empty `text` field.")
        if "domain" not in row:
            raise MoeprintError(f"{path} line {lineno} has no `domain` field (perplexity is reported per domain).")
        out.append(EvalText(str(row.get("id", f"line{lineno}")), _domain(row), text))
    return out


_LETTERS = "ABCDEFGHIJ"


def _mmlu_answer(value: Any, n_choices: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().upper() in _LETTERS[:n_choices] and value.strip():
        return _LETTERS.index(value.strip().upper())
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def load_choice_questions(path: str | Path) -> list[ChoiceQuestion]:
    """MMLU shape `{question, choices: [..], answer: index or letter}` or GPQA shape
    `{question, correct_answer, incorrect_answers: [..]}` (also GPQA's own `Question`, `Correct Answer`,
    `Incorrect Answer 1..3` columns). GPQA choices are shuffled with a seed taken from the question text,
    so the correct answer is not always first and ties cannot favour it."""
    out = []
    for lineno, row in read_jsonl(path, "multiple-choice"):
        question = row.get("question", row.get("Question"))
        if not isinstance(question, str) or not question.strip():
            raise MoeprintError(f"{path} line {lineno} has no `question`.")
        qid = str(row.get("id", f"line{lineno}"))
        if "choices" in row:
            choices = row["choices"]
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise MoeprintError(f"{path} line {lineno}: `choices` must be a list of at least two strings.")
            answer = _mmlu_answer(row.get("answer"), len(choices))
            if answer is None or not 0 <= answer < len(choices):
                raise MoeprintError(
                    f"{path} line {lineno}: `answer` must be a choice index 0..{len(choices) - 1} or a letter."
                )
        else:
            correct = row.get("correct_answer", row.get("Correct Answer"))
            incorrect = row.get("incorrect_answers")
            if incorrect is None:
                incorrect = [
                    row[k] for k in ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3") if k in row
                ]
            if not isinstance(correct, str) or not isinstance(incorrect, list) or not incorrect:
                raise MoeprintError(
                    f"{path} line {lineno} is neither MMLU shape (question, choices, answer) nor GPQA shape "
                    "(question, correct_answer, incorrect_answers)."
                )
            choices = [correct, *map(str, incorrect)]
            order = list(range(len(choices)))
            random.Random(hashlib.sha256(question.encode()).hexdigest()).shuffle(order)
            choices = [choices[i] for i in order]
            answer = order.index(0)
        out.append(ChoiceQuestion(qid, _domain(row), question.strip(), tuple(choices), answer))
    return out


def choice_context(q: ChoiceQuestion) -> str:
    """The text every choice continues (lm-eval's continuation style: the choice is scored, not a letter)."""
    return f"Question: {q.question}\nAnswer:"


def load_prompts(source: str) -> list[PromptRecord]:
    """Generation prompts from any source the record stage reads: a .jsonl/.csv file of `text` or
    `messages` rows with `domain`, `builtin`, or a benchmark (`mmlu:/local/copy`); see moeprint.prompts."""
    from moeprint.prompts import load_prompts as load_prompt_sources

    return load_prompt_sources([str(source)])


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form used to detect the same text in two places."""
    return re.sub(r"\s+", " ", text).strip().lower()


def text_keys(text: str, window: int = 256, min_chars: int = 64) -> set[str]:
    """Hashes that identify a text: its whole normalised form and its first `window` characters
    (so a document cut at a different length still matches). Short texts only match whole."""
    t = normalise(text)
    keys = {"full:" + hashlib.sha256(t.encode()).hexdigest()}
    if len(t) >= min_chars:
        keys.add("head:" + hashlib.sha256(t[:window].encode()).hexdigest())
    return keys


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
