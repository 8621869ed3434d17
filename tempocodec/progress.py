"""Progress bars for long work: a rich bar that follows the tasks of a dask computation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dask.callbacks import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
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


class _DaskBar(Callback):
    """Advances one rich task by one for every finished dask task, over every computation run while it is active."""

    def __init__(self, progress: Progress, description: str) -> None:
        super().__init__()
        self._progress = progress
        self._description = description
        self._task: TaskID | None = None  # added by the first computation
        self._total = 0

    def _start_state(self, dsk, state) -> None:
        self._total += sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=self._total)
        else:
            self._progress.update(self._task, total=self._total)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if self._task is not None:
            self._progress.advance(self._task)


@contextlib.contextmanager
def dask_progress(description: str, *, enabled: bool = True) -> Iterator[None]:
    """Show a progress bar for every dask computation run inside the block (the local schedulers)."""
    with progress_bar(enabled=enabled) as progress, _DaskBar(progress, description):
        yield
