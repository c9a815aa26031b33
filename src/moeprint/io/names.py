"""The one check for names read from data before they reach the filesystem or a file name.

Rules (docs/formats.md, "Names"):
- domain: `[a-z][a-z0-9_]*`, at most 64 characters (domains become file names: rankings/<c>/<domain>.json).
- category, dataset or criterion label: 1-128 characters, no control characters, no `/` or `\\`,
  not `.` or `..`, no leading or trailing space (published categories such as "Chemistry (general)" pass).
- prompt id: 1-256 characters, no control characters or `\\`, no `/`-separated part `.` or `..`
  (published ids are `dataset/category/combo`).
- a relative path inside an imported file: confined to its base folder (`confined`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from moeprint.errors import MoeprintError

DOMAIN_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _where(where: str) -> str:
    return f"{where}: " if where and not where.endswith(" ") else where


def check_domain(name: object, where: str = "") -> str:
    if not isinstance(name, str) or not DOMAIN_RE.fullmatch(name):
        raise MoeprintError(
            f"{_where(where)}domain name {name!r} is not allowed: use lowercase letters, digits "
            "and _, starting with a letter, at most 64 characters."
        )
    return name


def check_label(name: object, what: str = "category", where: str = "") -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 128
        or _CONTROL.search(name)
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or name != name.strip()
    ):
        raise MoeprintError(
            f"{_where(where)}{what} name {name!r} is not allowed: 1-128 characters without "
            "control characters, / or \\, not . or .., no surrounding spaces."
        )
    return name


def check_prompt_id(name: object, where: str = "") -> str:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 256
        or _CONTROL.search(name)
        or "\\" in name
        or any(part in (".", "..") for part in name.split("/"))
    ):
        raise MoeprintError(
            f"{_where(where)}prompt id {name!r} is not allowed: 1-256 characters without control "
            "characters or \\, and no . or .. part between slashes."
        )
    return name


def confined(base: Path, relative: object, where: str = "") -> Path:
    """`base / relative`, refused unless it stays inside `base` (no absolute paths, no `..` escapes)."""
    if not isinstance(relative, str) or not relative or _CONTROL.search(relative) or os.path.isabs(relative):
        raise MoeprintError(f"{_where(where)}path {relative!r} must be a relative path inside {base}.")
    path = base / relative
    if not os.path.abspath(path).startswith(os.path.abspath(base) + os.sep):
        raise MoeprintError(f"{_where(where)}path {relative!r} leaves {base}; it must stay inside it.")
    return path
