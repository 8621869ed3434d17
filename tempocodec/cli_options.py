"""Pieces the commands of :mod:`tempocodec.cli` share: the band option, the batch form (many inputs, a Dask
cluster), and printing (wide tables, JSON)."""

from __future__ import annotations

import glob
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tempocodec.bands import BAND_CHOICES
from tempocodec.errors import TempocodecError

# --------------------------------------------------------------------------------------------------- --band


class BandType(click.ParamType):
    """``--band``: ``uv``, ``vis`` (and ``all`` where several bands may be chosen), or a band's group name
    (``band_290_490_nm``, the spelling of earlier versions); converts to the short name."""

    name = "band"

    def __init__(self, *, several: bool) -> None:
        self.choices = [k for k, bands in BAND_CHOICES.items() if several or len(bands) == 1]

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.choices) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        aliases = {bands[0]: key for key, bands in BAND_CHOICES.items() if len(bands) == 1}
        text = aliases.get(text, text)
        if text not in self.choices:
            self.fail(f"{value!r}: choose one of {', '.join(self.choices)}", param, ctx)
        return text


def band_option(*, several: bool, default: str | None = "uv", help: str = "Band.") -> Callable:
    """The ``--band`` option of every command: ``uv|vis|all`` (``several``) or ``uv|vis``."""
    return click.option("--band", type=BandType(several=several), default=default, show_default=default is not None,
                        help=f"{help} (A band group name such as band_290_490_nm is accepted too.)")


def band_group(short: str) -> str:
    """The group name of a single band given by its short name (``uv`` -> ``band_290_490_nm``)."""
    return BAND_CHOICES[short][0]


# --------------------------------------------------------------------------------------------------- batch form


def split_out(args: tuple[str, ...], what: str) -> tuple[list[str], str]:
    """``INPUT... OUT`` split into the inputs and the output; a usage error when there is no input."""
    if len(args) < 2:
        raise click.UsageError(f"expected {what}... OUT (one or more inputs, then the output)")
    return list(args[:-1]), args[-1]


def is_batch(inputs: list[str], workers: int | None, scheduler: str | None) -> bool:
    """Whether a command runs in its batch form: several inputs, a glob, a directory of inputs (a directory that is
    not itself a zarr store), or ``--workers`` / ``--scheduler`` given."""
    if len(inputs) != 1 or workers is not None or scheduler is not None:
        return True
    item = inputs[0]
    if "://" in item or "::" in item:
        return False
    path = Path(item)
    return glob.has_magic(item) or (path.is_dir() and not ((path / "zarr.json").is_file() or (path / ".zgroup").is_file()))


def run_batch(run: Callable[[Any], Any], scheduler: str | None) -> Any:
    """``run(client)``: with the client of the scheduler at ``scheduler`` (closed afterwards), else ``run(None)``."""
    if scheduler is None:
        return run(None)
    try:
        from distributed import Client
    except ImportError:
        raise TempocodecError("--scheduler needs dask.distributed: pip install 'tempocodec[cluster]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except Exception as err:  # OSError (no scheduler there), ValueError (not an address), TimeoutError, ...
        raise TempocodecError(f"--scheduler {scheduler}: cannot connect ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:200]})") from None
    with client:
        return run(client)


def finish_batch(report: Any, verb: str, out: str | None, started: float, quiet: bool) -> None:
    """One line per failed input on stderr, a summary line (unless ``quiet``), exit status 1 if any failed."""
    for outcome in report.failed:
        line = outcome.error if outcome.source in outcome.error else f"{outcome.source}: {outcome.error}"
        click.echo(f"failed: {line}", err=True)
    total, failed = len(report.outcomes), len(report.failed)
    if not quiet:
        noun = "granules" if verb == "compressed" else "stores"
        seconds = time.perf_counter() - started
        where = f" into {out}" if out else ""
        click.echo(f"{verb} {total - failed} of {total} {noun}{where} in {seconds:.1f} s "
                   f"({60 * (total - failed) / seconds:.1f} {noun}/minute)" + (f"; {failed} failed" if failed else ""))
    if failed:
        sys.exit(1)


# --------------------------------------------------------------------------------------------------- printing


def print_table(table: Any) -> None:
    """Print a rich table on stdout at its natural width, wider than the terminal if need be, so that no name is
    cut or wrapped."""
    from rich.console import Console

    console = Console()
    natural = Console(width=10_000).measure(table).maximum
    Console(width=max(console.width, natural)).print(table)


def summary_json(summary: Any) -> dict[str, Any]:
    """A store's :class:`~tempocodec.runtime.store.StoreSummary` as JSON-ready data (sizes in bytes)."""
    return {
        "store": str(summary.path),
        "variables": [{"group": v.group, "name": v.name, "codec": v.codec, "raw_bytes": v.raw_bytes,
                       "stored_bytes": v.stored_bytes, "ratio": v.ratio if v.stored_bytes else None, "bound": v.bound}
                      for v in summary.variables],
        "total_raw_bytes": summary.total_raw,
        "total_stored_bytes": summary.total_stored,
        "bands": summary.bands,
    }


def require_torch(command: str) -> None:
    """Raise a one-line error naming the extra to install when PyTorch is not importable (training commands)."""
    if importlib.util.find_spec("torch") is None:  # looked up, not imported: torch loads only under training/
        raise TempocodecError(f"{command} needs PyTorch, which is not installed: pip install 'tempocodec[train]'")
