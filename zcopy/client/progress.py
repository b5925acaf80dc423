"""A rich progress bar on stderr for one transfer.

On a terminal it animates; otherwise rich draws it once when the transfer
ends, which leaves a one-line record in logs. ``quiet`` turns it off. The
label (a remote or local name) is shown as text, never read as rich markup:
a name may hold "[/b]" (a MarkupError) or "[link=...]" (a terminal link).
"""

from __future__ import annotations

import contextlib


class Bar:
    """``advance(n)`` / ``update(done)`` as bytes move; cheap to call often."""

    def __init__(self, progress, task) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, **({"total": total} if total else {}))


@contextlib.contextmanager
def transfer_bar(description: str, total: int | None, *, quiet: bool = False, completed: int = 0):
    if quiet:
        yield Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed)
        yield Bar(progress, task)


class CountingReader:
    """A reader that advances a bar by what it hands out: puts it between a
    stream and pyrage, which only knows ``read(n)``."""

    def __init__(self, reader, bar: Bar) -> None:
        self._reader = reader
        self._bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        self._bar.advance(len(data))
        return data
