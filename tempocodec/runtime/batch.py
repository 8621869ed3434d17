"""Many granules (or stores) at once: one task per input, in this process or on a Dask cluster.

:func:`compress_granules`, :func:`decompress_stores` and :func:`query_stores` run one job per input. Where they run:

- ``client``: a ``dask.distributed.Client`` the caller made (a ``LocalCluster``, Coiled, dask-gateway,
  dask-jobqueue: any scheduler address), one task per input;
- else ``workers`` > 1: a ``LocalCluster`` of that many worker processes, one thread each, made and closed here;
- else in this process, one input after another.

Each job runs its own dask computations on the threads of the process it runs in (``scheduler="threads"``), never
back on the cluster: a granule's graph is fine-grained and memory-bound, and sending its tiles between workers would
cost more than it gains. Outputs are written atomically, as by the single-input functions. A job that fails is
reported (one line, :attr:`Outcome.error`) and the others go on; one progress bar counts finished inputs.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask

from tempocodec.errors import TempocodecError
from tempocodec.granule.netcdf import one_line
from tempocodec.granule.remote import granule_name, is_url
from tempocodec.progress import progress_bar

GRANULE_PATTERN = "TEMPO_RAD_L1_*.nc"
"""The L1B granules a directory given as input contributes (searched recursively)."""
STORE_PATTERN = "*.zarr"
"""The stores a directory given as input contributes (not searched inside stores)."""


@dataclass(frozen=True)
class Outcome:
    """One input's job: ``source`` (its name), ``output`` (path written, or None), ``error`` (one line, None when it
    succeeded), ``seconds`` (wall time of the job), ``value`` (what the job returned)."""

    source: str
    output: str | None
    error: str | None
    seconds: float
    value: Any = None


@dataclass(frozen=True)
class BatchReport:
    """The outcomes of a batch, in input order."""

    outcomes: tuple[Outcome, ...]

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """The outcomes with an error."""
        return tuple(o for o in self.outcomes if o.error is not None)

    @property
    def ok(self) -> bool:
        """Whether every job succeeded."""
        return not self.failed


# --------------------------------------------------------------------------------------------------- inputs


def expand_inputs(items: Iterable[Any], pattern: str) -> list[Any]:
    """The inputs named by ``items``, in order, each once: a directory gives the entries matching ``pattern`` in it
    (``*.zarr`` at its top, ``*.nc`` searched recursively), a glob its matches (sorted); paths, URLs and objects
    pass as they are (a missing path fails as its own job). A directory or a glob with no match is an error."""
    out: list[Any] = []
    for item in items:
        text = os.fsdecode(item) if isinstance(item, (str, os.PathLike)) else None
        if text is None or is_url(text):
            out.append(item)
        elif Path(text).is_dir() and not _is_zarr(Path(text)):
            found = sorted(Path(text).rglob(pattern) if pattern.endswith(".nc") else Path(text).glob(pattern))
            if not found:
                raise TempocodecError(f"{text}: a directory with no {pattern} in it")
            out += found
        elif glob.has_magic(text):
            found = [Path(p) for p in sorted(glob.glob(text))]
            if not found:
                raise TempocodecError(f"{text}: no file matches")
            out += found
        else:
            out.append(Path(text))
    return list(dict.fromkeys(out)) if all(isinstance(i, (str, Path)) for i in out) else out


def _is_zarr(path: Path) -> bool:
    """Whether the directory ``path`` is itself a zarr store (v3 or v2 root metadata), not a directory of inputs."""
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def output_paths(inputs: list[Any], out_dir: Path, suffix: str) -> list[Path]:
    """``out_dir/<stem><suffix>`` for each input (its name without ``.nc``/``.zarr``/``.zip``); two inputs that
    would write the same output are an error."""
    outs = [out_dir / (_stem(granule_name(i)) + suffix) for i in inputs]
    seen: dict[Path, str] = {}
    for item, out in zip(inputs, outs, strict=True):
        if out in seen:
            raise TempocodecError(f"{granule_name(item)} and {seen[out]} would both be written to {out}")
        seen[out] = granule_name(item)
    return outs


def _stem(name: str) -> str:
    """A file name without its directory and its ``.nc``/``.zarr``/``.zip`` suffixes."""
    base = name.split("::")[-1].rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zip", ".zarr", ".nc"):
        base = base.removesuffix(suffix)
    return base or "output"


# --------------------------------------------------------------------------------------------------- running


def run_jobs(job: Callable[[Any, Path | None], Any], inputs: list[Any], outputs: list[Path | None], *,
             what: str, client: Any = None, workers: int = 1, progress: bool = True) -> BatchReport:
    """Run ``job(input, output)`` for every input (see the module docstring for where); ``what`` describes the
    jobs on the progress bar (``compress``), which counts inputs."""
    if workers < 1:
        raise TempocodecError(f"--workers {workers}: expected at least 1")
    bar = progress_bar(enabled=progress)
    with bar:
        task = bar.add_task(f"{what} ({len(inputs)} {_noun(what)})", total=len(inputs))
        done: dict[int, Outcome] = {}
        for index, outcome in _outcomes(job, inputs, outputs, client, workers):
            done[index] = outcome
            bar.advance(task)
    return BatchReport(tuple(done[i] for i in range(len(inputs))))


def _noun(what: str) -> str:
    """What a job's input is: granules for ``compress``, stores otherwise."""
    return "granules" if what == "compress" else "stores"


def _outcomes(job: Callable[[Any, Path | None], Any], inputs: list[Any], outputs: list[Path | None], client: Any,
              workers: int) -> Iterator[tuple[int, Outcome]]:
    """(input index, outcome) as each job finishes."""
    guarded = functools.partial(_guarded, job)
    if client is None and workers == 1:
        for index, (item, out) in enumerate(zip(inputs, outputs, strict=True)):
            yield index, guarded(item, out)
        return
    from distributed import as_completed

    with _own_client(workers) if client is None else contextlib.nullcontext(client) as use:
        futures = {use.submit(guarded, item, out, pure=False, key=f"tempocodec-{index}-{_stem(granule_name(item))}"): index
                   for index, (item, out) in enumerate(zip(inputs, outputs, strict=True))}
        for future in as_completed(futures):
            index = futures[future]
            try:
                yield index, future.result()
            except Exception as err:  # the worker died (killed for memory, ...); a job's own faults are caught inside
                yield index, Outcome(granule_name(inputs[index]), None, f"worker lost: {one_line(err)}", 0.0)


@contextlib.contextmanager
def _own_client(workers: int) -> Iterator[Any]:
    """A client of a new ``LocalCluster`` of ``workers`` single-threaded processes, both closed at the end."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _guarded(job: Callable[[Any, Path | None], Any], item: Any, out: Path | None) -> Outcome:
    """``job(item, out)`` as an :class:`Outcome`, its dask work on this process's threads; a failure becomes its
    one-line error (a :class:`TempocodecError`'s message, else the exception's type and message)."""
    start = time.perf_counter()
    name = granule_name(item)
    try:
        with dask.config.set(scheduler="threads"):
            value = job(item, out)
    except TempocodecError as err:
        return Outcome(name, None, str(err), time.perf_counter() - start)
    except Exception as err:  # any other fault of one input must not stop the others
        return Outcome(name, None, f"{type(err).__name__}: {one_line(err)}", time.perf_counter() - start)
    return Outcome(name, None if out is None else str(out), None, time.perf_counter() - start, value)


# --------------------------------------------------------------------------------------------------- the batches


def compress_granules(paths: Iterable[Any], out_dir: str | os.PathLike, *, client: Any = None, workers: int = 1,
                      progress: bool = True, **options: Any) -> BatchReport:
    """Compress each granule of ``paths`` (paths, globs, directories, fsspec URLs, file objects:
    :func:`expand_inputs`) into ``out_dir/<granule stem>.zarr``, one task per granule (module docstring: ``client``,
    ``workers``). ``options`` go to :func:`~tempocodec.runtime.store.compress_granule` (``bands``, ``model``,
    ``overwrite``, ...). Each outcome's ``value`` is ``(raw bytes, stored bytes)`` of its store."""
    inputs = expand_inputs(paths, GRANULE_PATTERN)
    outputs = output_paths(inputs, _out_dir(out_dir), ".zarr")
    job = functools.partial(_compress_one, options=options)
    return run_jobs(job, inputs, list(outputs), what="compress", client=client, workers=workers, progress=progress)


def decompress_stores(stores: Iterable[Any], out_dir: str | os.PathLike, *, client: Any = None, workers: int = 1,
                      progress: bool = True, **options: Any) -> BatchReport:
    """Decompress each store of ``stores`` (paths, globs, directories of ``*.zarr``, URLs, store objects) into
    ``out_dir/<store stem>.nc``, one task per store (module docstring: ``client``, ``workers``). ``options`` go to
    :func:`~tempocodec.runtime.store.decompress_store` (``overwrite``, ``deflate``)."""
    inputs = expand_inputs(stores, STORE_PATTERN)
    outputs = output_paths(inputs, _out_dir(out_dir), ".nc")
    job = functools.partial(_decompress_one, options=options)
    return run_jobs(job, inputs, list(outputs), what="decompress", client=client, workers=workers, progress=progress)


def query_stores(stores: Iterable[Any], products: str | Iterable[str], band: str, *,
                 out_dir: str | os.PathLike | None = None, client: Any = None, workers: int = 1,
                 progress: bool = True, overwrite: bool = False, **options: Any) -> BatchReport:
    """Level-2 products of each store of ``stores`` from its latents (:func:`~tempocodec.runtime.query.query_store`,
    ``options``: ``kind``, ``model``), one task per store: written to ``out_dir/<store stem>.products.nc`` where
    ``out_dir`` is given (each outcome's ``value`` is then None), else returned as each outcome's ``value`` (a
    Dataset)."""
    inputs = expand_inputs(stores, STORE_PATTERN)
    outputs: list[Path | None] = [None] * len(inputs)
    if out_dir is not None:
        outputs = list(output_paths(inputs, _out_dir(out_dir), ".products.nc"))
    job = functools.partial(_query_one, products=products, band=band, overwrite=overwrite, options=options)
    return run_jobs(job, inputs, outputs, what="query", client=client, workers=workers, progress=progress)


def _out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir``, which must be a directory or not exist yet (it is made by the first output)."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise TempocodecError(f"{path}: exists and is not a directory (with several inputs the output is a directory)")
    return path


def _compress_one(item: Any, out: Path | None, *, options: dict[str, Any]) -> tuple[int, int]:
    """One granule into its store; (raw bytes, stored bytes)."""
    from tempocodec.runtime.store import compress_granule

    assert out is not None  # compress always writes
    summary = compress_granule(item, out, progress=False, **options)
    return summary.total_raw, summary.total_stored


def _decompress_one(item: Any, out: Path | None, *, options: dict[str, Any]) -> int:
    """One store into its netCDF file; the file's size in bytes."""
    from tempocodec.runtime.store import decompress_store

    assert out is not None  # decompress always writes
    return decompress_store(item, out, progress=False, **options).stat().st_size


def _query_one(item: Any, out: Path | None, *, products: str | Iterable[str], band: str, overwrite: bool,
               options: dict[str, Any]) -> Any:
    """One store's products: written to ``out`` (returns None), or returned as a Dataset where ``out`` is None."""
    from tempocodec.runtime.query import query_store, write_products

    ds = query_store(item, products, band, **options)
    if out is None:
        return ds
    write_products(ds, out, overwrite=overwrite)
    return None
