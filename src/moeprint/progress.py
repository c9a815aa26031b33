"""The one progress display of moeprint (rich, on stderr); no other module imports a progress library.

    with Progress() as progress:             one live display, any number of bars
        advance = progress.task("cuts", 12)   advance() / advance(n); advance.update(status=..., label=...)
    with bar("recording batches", n) as advance: ...    a display with one bar
    for item in track(items, "import"): ...           a bar over an iterable

Every entry point takes `enabled`/`disable` so that `--quiet` and tests show nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _RichProgress


class Task:
    """One bar of a display: call it to advance; `update` sets its count, label or status text."""

    def __init__(self, display: _RichProgress, task_id) -> None:
        self._display, self._id = display, task_id

    def __call__(self, n: float = 1, status: str | None = None) -> None:
        """Advance by `n`; `status` names the step just done (shown beside the bar)."""
        if status is not None:
            self._display.update(self._id, status=status[:60])
        self._display.advance(self._id, n)

    def update(self, *, completed: float | None = None, label: str | None = None, status: str | None = None) -> None:
        fields = {} if status is None else {"status": status}
        self._display.update(self._id, completed=completed, description=label, **fields)


class Progress:
    """A live display on stderr. `bytes=True` counts its bars in bytes; `transient` erases it when done."""

    def __init__(self, disable: bool = False, *, transient: bool = False, bytes: bool = False) -> None:
        self._display = _RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn() if bytes else MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=disable,
            transient=transient,
        )

    def __enter__(self) -> Progress:
        self._display.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._display.__exit__(*exc)

    def task(self, label: str, total: float | None, status: str = "") -> Task:
        """A new bar; `total=None` for a bar with no known end (a count and a status only)."""
        return Task(self._display, self._display.add_task(label, total=total, status=status))


@contextlib.contextmanager
def bar(
    label: str, total: float | None, enabled: bool = True, *, bytes: bool = False, transient: bool = False
) -> Iterator[Task]:
    """A display holding one bar; yields the bar (call it to advance)."""
    with Progress(disable=not enabled, transient=transient, bytes=bytes) as progress:
        yield progress.task(label, total)


def track(items: Iterable, label: str, enabled: bool = True, total: int | None = None) -> Iterator:
    """The items of `items`, one bar step each (`total` defaults to len(items))."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with bar(label, total, enabled) as advance:
        for item in items:
            yield item
            advance()
