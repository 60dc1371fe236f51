"""A progress bar on stderr (rich), so that `--json` output on stdout stays pure JSON."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

Update = Callable[[int], None]


def wanted(as_json: bool) -> bool:
    """Bars only for a person watching a terminal: not under --json, not into a pipe."""
    return not as_json and sys.stderr.isatty()


@contextlib.contextmanager
def bar(label: str, total: int, enabled: bool) -> Iterator[Update]:
    """Yields ``update(done)``; a no-op when disabled."""
    if not enabled:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=max(total, 1))

        def update(done: int) -> None:
            progress.update(task, completed=min(max(done, 0), max(total, 1)))

        yield update
