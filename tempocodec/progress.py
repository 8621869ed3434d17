"""Progress bars for long work: one rich bar on stderr that says what it counts (mirror steps, MB, granules)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(*extra: ProgressColumn, enabled: bool = True) -> Progress:
    """A rich progress bar on stderr (description, bar, count, times, then the ``extra`` columns), hidden when
    ``enabled`` is false."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra,
        disable=not enabled,
        transient=False,
        console=Console(stderr=True),
    )
