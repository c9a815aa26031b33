"""A thin rich progress display: `task(label, total)` returns a callable that advances it."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress


class Progress:
    def __init__(self, disable: bool = False) -> None:
        self._bar = _RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=disable,
            transient=False,
        )

    def __enter__(self) -> Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def task(self, label: str, total: int) -> Callable[..., None]:
        task_id = self._bar.add_task(label, total=total)
        return lambda n=1: self._bar.advance(task_id, n)
