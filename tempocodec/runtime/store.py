"""A TEMPO Level-1B granule as a Zarr store, and back.

Layout of a store written by :func:`compress_granule` (Zarr v3 by default, v2 on request):

- root group: the granule's global attributes, the root variables (``mirror_step``, ``time``, ...), and the
  attribute ``tempocodec`` (format version, source file name, per-band codec summary, attribute dtypes);
- one group per band (``band_290_490_nm``, ``band_540_740_nm``): ``radiance`` in its original dims
  ``(mirror_step, xtrack, spectral_channel)`` and attributes, chunked 64×64×1028 through the VAE codec
  (inside 64×512×1028 shards on v3); ``radiance_error`` coded exactly from the radiance's latents (chunked and
  sharded alike, :mod:`tempocodec.codec.noise`) or bit-rounded, whichever is smaller; geolocation and angles on
  documented grids (:mod:`tempocodec.runtime.auxcodecs`); every other variable lossless, each chunk with a CRC-32C.

A band without a model for it keeps its radiance losslessly and says so in ``tempocodec.bands``. Each radiance
payload records its chunk grid position, and ``tempocodec.integrity`` lists every chunk object written with its
CRC-32 (:mod:`tempocodec.runtime.integrity`): every reader here refuses a store that lacks one of them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import numpy as np
import xarray as xr
import zarr

from tempocodec.atomic import Replaceable, atomic_dir, check_target, is_empty_dir
from tempocodec.bands import BAND_CHOICES
from tempocodec.codec import payload
from tempocodec.codec.stored import read_stored_chunks
from tempocodec.defaults import DEFAULT_LATENT_DTYPE
from tempocodec.errors import TempocodecError
from tempocodec.granule.l1b import RADIANCE_DIMS, RADIANCE_FILL, L1BGranule, open_l1b
from tempocodec.granule.netcdf import NETCDF_FILE
from tempocodec.granule.remote import GranuleSource, local_granule
from tempocodec.prepare.tiles import TILE
from tempocodec.progress import progress_bar
from tempocodec.runtime import integrity, provenance
from tempocodec.runtime.artifacts import ModelArtifacts, load_model, resolve_model
from tempocodec.runtime.auxcodecs import (
    aux_encoding,
    bitround_lossless,
    blosc_lossless,
    bound_text,
    codec_names,
    quiet_codecs,
    without_codecs,
)
from tempocodec.runtime.features import feature_fit, write_features
from tempocodec.runtime.location import (
    StoreTarget,
    Where,
    array_stored_bytes,
    exists,
    locate_store,
    total_stored_bytes,
    zarr_target,
)
from tempocodec.runtime.radiance_coding import (
    ERROR_MODES,
    SHARD_XTRACK,
    BandCoding,
    ResidualRequest,
    band_stripes,
    vae_radiance,
)
from tempocodec.runtime.streaming import Coder, Sink, bounded_workers, to_zarr, write_group

STORE_FORMAT = "tempocodec-store/1"
DEFAULT_MODELS = {"band_290_490_nm": "tempo-vae-uv-2", "band_540_740_nm": "tempo-vae-vis-2"}
STORE = Replaceable(lambda path: is_empty_dir(path) or is_store(path), "a tempocodec store")
"""What ``compress --overwrite`` may replace."""
MAX_ATTRIBUTE_CHARS = 65536
"""Longest string dtype a store may record for an attribute (characters)."""
_ATTRIBUTE_SIZES = {"i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (4, 8)}
"""Bytes per element of the numeric dtypes netCDF attributes can have, by numpy kind."""

ZarrFormat = Literal[2, 3]


@dataclass(frozen=True)
class VariableSize:
    """Stored size of one array: ``raw_bytes`` in memory (its dtype), ``stored_bytes`` on disk."""

    group: str
    name: str
    codec: str
    raw_bytes: int
    stored_bytes: int
    bound: str = "exact"
    """The documented error bound (``exact``, ``abs <= 1e-05 degrees``, ``rel <= 0.78%``, or ``model`` for
    VAE-coded radiance, whose error the model card gives)."""

    @property
    def ratio(self) -> float:
        """Raw over stored bytes (inf for an array with no stored chunk)."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else float("inf")


@dataclass(frozen=True)
class StoreSummary:
    """Sizes of every array of a store, and the codec of each band's radiance."""

    path: Where
    variables: tuple[VariableSize, ...]
    bands: dict[str, dict[str, Any]]

    def radiance(self, band: str) -> VariableSize:
        """The size entry of one band's radiance."""
        return next(v for v in self.variables if v.group == band and v.name == "radiance")

    @property
    def total_raw(self) -> int:
        """Bytes of every array in memory."""
        return sum(v.raw_bytes for v in self.variables)

    @property
    def total_stored(self) -> int:
        """Bytes of every file of the store, metadata included."""
        return total_stored_bytes(self.path)


# --------------------------------------------------------------------------------------------------- compress


@bounded_workers()  # also where a dask.distributed client is the default: see bounded_workers
def compress_granule(
    src: GranuleSource,
    dst: str | os.PathLike,
    *,
    bands: str = "uv",
    model: str | os.PathLike | None = None,
    latent_dtype: str = DEFAULT_LATENT_DTYPE,
    latent_step: float | None = None,
    zarr_format: ZarrFormat = 3,
    drop_radiance_error: bool = False,
    error_bound: float | None = None,
    ratio: float | None = None,
    lossless_aux: bool = False,
    radiance_error: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> StoreSummary:
    """Compress the L1B granule ``src`` into the Zarr store ``dst`` and return its size summary.

    ``src`` is a path, an fsspec URL or a binary file object (:mod:`tempocodec.granule.remote`). ``bands`` is
    ``uv``, ``vis`` or ``all``; ``model`` a model name or directory (default: the released model of
    each band, where there is one). The store is written beside ``dst`` under a temporary name and renamed
    into place at the end (:mod:`tempocodec.atomic`), so an interrupted run leaves nothing; an existing ``dst``
    is replaced only with ``overwrite``, only when it is a store (or an empty directory), and only by a complete
    store. Without ``overwrite``, a ``dst`` that another run puts in place meanwhile is not replaced either.

    ``latent_dtype``: how the latents are stored (:data:`~tempocodec.codec.config.LATENT_DTYPES`; by default quantized
    to multiples of ``latent_step``, default :data:`~tempocodec.codec.config.DEFAULT_LATENT_STEP`, and entropy coded).
    ``error_bound`` K adds the residual layer (:mod:`tempocodec.codec.residual`) so that every valid radiance value
    decodes within K times its ``radiance_error``; ``ratio`` instead picks the smallest such bound at which the
    radiance compresses about that many times. Neither: the latent alone (about 3,200× on UV, no bound).

    Every variable but radiance goes through :func:`tempocodec.runtime.auxcodecs.aux_encoding` (geolocation and
    angles on a documented grid); ``radiance_error`` (``radiance_error``, one of
    :data:`~tempocodec.runtime.radiance_coding.ERROR_MODES`) is coded exactly from the radiance's latents or
    bit-rounded in its own codec pipeline, by default whichever is smaller on the sample; ``lossless_aux`` keeps them
    as release 0.2 did: lossless, ``radiance_error`` rounded to 7 bits.
    """
    dst = Path(dst)
    residual = ResidualRequest.parse(error_bound, ratio)
    if radiance_error not in ERROR_MODES:
        raise TempocodecError(f"unknown radiance_error coding {radiance_error!r}: choose one of {', '.join(ERROR_MODES)}")
    if bands not in BAND_CHOICES:
        raise TempocodecError(f"unknown band selection {bands!r}: choose one of {', '.join(BAND_CHOICES)}")
    replace = STORE if overwrite else None
    check_target(dst, replace)
    chosen = _models_for(BAND_CHOICES[bands], model)
    with local_granule(src) as local, open_l1b(local) as granule, atomic_dir(dst, replace=replace) as tmp:
        present = [b for b in BAND_CHOICES[bands] if b in granule.band_names]
        if not present:
            raise TempocodecError(f"{granule.path}: none of the bands {', '.join(BAND_CHOICES[bands])} is in the file")
        dtypes: dict[str, str] = {}
        summary: dict[str, dict[str, Any]] = {}
        note = provenance.compress_note(granule.path, chosen, lossless_aux, radiance_error)
        attrs = provenance.with_history(granule.attrs, note)
        _write_root(tmp, granule.root, attrs, zarr_format, dtypes)
        for band in present:
            ds = granule.band(band)
            noise = ds.get("radiance_error")
            if drop_radiance_error:
                ds = ds.drop_vars("radiance_error", errors="ignore")
            coding = BandCoding(chosen.get(band), latent_dtype, residual, noise, latent_step,
                                error_mode="rounded" if lossless_aux else radiance_error)
            summary[band] = _write_band(tmp, band, ds, coding, zarr_format, dtypes, progress, lossless_aux)
        _finish(tmp, granule, summary, dtypes, zarr_format)
    return store_info(dst)


def _models_for(bands: tuple[str, ...], model: str | os.PathLike | None) -> dict[str, ModelArtifacts]:
    """The model of each band that has one: ``model`` where given (for its own band), else the released default."""
    if model is not None:
        art = load_model(resolve_model(model))
        if art.band not in bands:
            raise TempocodecError(f"model {art.name} is for {art.band}, which is not among the bands asked for "
                                  f"({', '.join(bands)})")
        return {art.band: art}
    return {b: load_model(resolve_model(DEFAULT_MODELS[b])) for b in bands if b in DEFAULT_MODELS}


def _write_root(tmp: Path, root: xr.Dataset, attrs: dict[str, Any], zarr_format: ZarrFormat, dtypes: dict[str, str]) -> None:
    """Root variables and global attributes, lossless."""
    ds, encoding = _lossless(root, "", zarr_format, dtypes)
    ds.attrs = _json_attrs(attrs, "/", dtypes)
    to_zarr(ds, tmp, None, encoding, zarr_format, mode="w")


def _lossless(ds: xr.Dataset, group: str, zarr_format: ZarrFormat, dtypes: dict[str, str]) -> tuple[xr.Dataset, dict]:
    """A copy of the group ``ds`` with JSON-safe variable attributes, and the lossless encoding of every variable
    (taken before the attributes give up their ``_FillValue``)."""
    ds = ds.copy()
    encoding = {name: _lossless_encoding(ds[name], zarr_format) for name in ds.variables}
    for name in ds.variables:
        ds[name].attrs = _json_attrs(ds[name].attrs, f"{group}/{name}", dtypes)
    return ds, encoding


def _write_band(
    tmp: Path,
    band: str,
    ds: xr.Dataset,
    coding: BandCoding,
    zarr_format: ZarrFormat,
    dtypes: dict[str, str],
    progress: bool,
    lossless_aux: bool = False,
) -> dict[str, Any]:
    """One band group; returns the band's entry of the ``tempocodec.bands`` attribute."""
    model = coding.model
    fill, valid = _fill_value(ds["radiance"]), _valid_range(ds["radiance"])
    # the small variables read once: their encodings look at their values, then they are written
    source = ds = ds.assign({n: v.load() for n, v in ds.data_vars.items() if v.dims != RADIANCE_DIMS})
    ds, encoding = _lossless(ds, f"/{band}", zarr_format, dtypes)
    if not lossless_aux:
        _aux_encodings(source, ds, encoding, zarr_format)
    elif "radiance_error" in ds:  # rounded in its own codec pipeline, as any zarr reader sees
        rounded, ds["radiance_error"].attrs["tempocodec_lossy"] = bitround_lossless(zarr_format)
        encoding["radiance_error"].update(rounded)
    stripes = band_stripes(ds, coding.noise)
    coders: dict[str, Coder | None] = {}
    fit = None
    if model is None:
        entry: dict[str, Any] = {"radiance": "lossless", "reason": f"no model for {band}"}
    else:
        if model.n_channels != ds.sizes["spectral_channel"]:
            raise TempocodecError(
                f"model {model.name} takes {model.n_channels} spectral channels, {band} has {ds.sizes['spectral_channel']}"
            )
        coded = vae_radiance(stripes, coding, fill, valid, zarr_format)
        entry, coders = coded.entry, coded.coders
        encoding["radiance"] = coded.encodings["radiance"]
        ds["radiance"].attrs["tempocodec_lossy"] = provenance.radiance_note(model, coding.latent_dtype, entry)
        if "radiance_error" in coded.encodings:  # coded from the latents, exactly
            encoding["radiance_error"].update(coded.encodings["radiance_error"])
            ds["radiance_error"].attrs.pop("tempocodec_lossy", None)
            ds["radiance_error"].attrs[provenance.CODING_ATTR] = provenance.error_note(entry)
        fit = feature_fit(ds, band, model.downsample)  # DOAS slant columns per latent cell, for the probes
    observers = () if fit is None else (Sink(("radiance",), lambda rows, blocks: fit.add(blocks["radiance"])),)
    chunks = {"mirror_step": TILE, "xtrack": SHARD_XTRACK if zarr_format == 3 else TILE}
    with progress_bar(enabled=progress) as bar, quiet_codecs():
        task = bar.add_task(f"{band} (mirror steps)", total=ds.sizes["mirror_step"])
        write_group(ds, tmp, band, encoding, zarr_format, chunks, column=SHARD_XTRACK, stripes=stripes, coders=coders,
                    observers=observers, progress=lambda steps: bar.advance(task, steps))
    if fit is not None:
        write_features(tmp, band, fit, zarr_format)
    return entry


def _aux_encodings(source: xr.Dataset, ds: xr.Dataset, encoding: dict[str, dict], zarr_format: ZarrFormat) -> None:
    """Put every variable but radiance on its :func:`~tempocodec.runtime.auxcodecs.aux_encoding` (in ``encoding``,
    in place), and mark each lossy one with its ``tempocodec_lossy`` attribute in ``ds``; ``source`` holds the
    variables as read (their fill values)."""
    for name in ds.variables:
        if name == "radiance":
            continue
        with quiet_codecs():
            codecs, note = aux_encoding(source[name], str(name), zarr_format)
        encoding[str(name)].update(codecs)
        if note is not None:
            ds[name].attrs["tempocodec_lossy"] = note


def _lossless_encoding(var: xr.DataArray, zarr_format: ZarrFormat) -> dict[str, Any]:
    """:func:`~tempocodec.runtime.auxcodecs.blosc_lossless`, the variable's fill value, 3-D arrays chunked like the
    radiance."""
    enc: dict[str, Any] = {}
    enc["_FillValue"] = var.encoding.get("_FillValue", var.attrs.get("_FillValue"))  # None: no fill value, as in the source
    if var.ndim == 3:
        enc["chunks"] = (TILE, TILE, var.shape[2])
    return enc | blosc_lossless(zarr_format, var.dtype.itemsize)


def _fill_value(radiance: xr.DataArray) -> np.float32:
    """The radiance array's fill value (its ``_FillValue``), or TEMPO's L1B radiance fill."""
    return np.float32(radiance.encoding.get("_FillValue", radiance.attrs.get("_FillValue", RADIANCE_FILL)))


def _valid_range(radiance: xr.DataArray) -> tuple[float | None, float | None]:
    """The radiance array's declared ``(valid_min, valid_max)`` (its ``valid_range``, else ``valid_min`` / ``valid_max``
    attributes), None for a bound it does not declare."""
    attrs = radiance.attrs
    bounds = list(np.ravel(attrs["valid_range"])) if "valid_range" in attrs else [attrs.get("valid_min"), attrs.get("valid_max")]
    try:
        lo, hi = (None if b is None else float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TempocodecError(f"radiance: its valid range {bounds} is not two numbers") from None
    return lo, hi


def _finish(tmp: Path, granule, bands: dict[str, dict[str, Any]], dtypes: dict[str, str], zarr_format: ZarrFormat) -> None:
    """The ``tempocodec`` root attribute with the integrity record of every object written, and consolidate the
    metadata so ``xr.open_zarr`` opens it directly."""
    root = zarr.open_group(tmp, mode="r+", zarr_format=zarr_format)
    root.attrs["tempocodec"] = {
        "format": STORE_FORMAT,
        "source": Path(granule.path).name,
        "bands": bands,
        "attribute_dtypes": dtypes,
        "integrity": integrity.build_record(root).to_json(),
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(tmp, zarr_format=zarr_format)


def _json_attrs(attrs: dict[str, Any], where: str, dtypes: dict[str, str]) -> dict[str, Any]:
    """Attributes made JSON-safe, ``_FillValue`` left to the encoding; the numpy dtype of each numeric one is recorded
    in ``dtypes`` under ``where/name``."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if key == "_FillValue":
            continue
        if isinstance(value, (np.generic, np.ndarray)):
            dtypes[_attr_key(where, key)] = str(np.asarray(value).dtype)
            value = np.asarray(value).tolist()
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[key] = value
    return out


def store_meta(root: zarr.Group) -> dict[str, Any]:
    """The ``tempocodec`` root attribute of a store opened with :func:`open_root` (which checked it is a mapping)."""
    return cast(dict[str, Any], root.attrs["tempocodec"])


_Node = TypeVar("_Node", zarr.Array, zarr.Group)


def store_node(group: zarr.Group, name: str, kind: type[_Node], where: str | os.PathLike | Where) -> _Node:
    """``group[name]``, which must be a zarr ``kind`` (Array or Group); ``where`` names the group in the error."""
    node = group[name]
    if not isinstance(node, kind):
        raise TempocodecError(f"{where}: damaged store: {name} is not a zarr {kind.__name__.lower()}")
    return node


# --------------------------------------------------------------------------------------------------- info


def store_info(path: StoreTarget) -> StoreSummary:
    """Sizes and codecs of every array of a store written by :func:`compress_granule` (a path, an fsspec URL or a
    zarr store: :mod:`tempocodec.runtime.location`)."""
    path = locate_store(path)
    root = open_root(path)
    meta = store_meta(root)
    with quiet_codecs():
        return _summary(path, root, meta)


def _summary(path: Where, root: zarr.Group, meta: dict[str, Any]) -> StoreSummary:
    """:func:`store_info` of the opened store ``root`` with its ``tempocodec`` attribute ``meta``."""
    sizes: list[VariableSize] = []
    bands = [(name, store_node(root, name, zarr.Group, path)) for name in meta["bands"]]
    for group_path, group in [("/", root), *bands]:
        for name, arr in group.arrays():
            raw = int(np.prod(arr.shape, dtype=np.int64)) * arr.dtype.itemsize
            sizes.append(VariableSize(group_path, name, codec_names(arr), raw, array_stored_bytes(arr),
                                      bound_text(name, arr.attrs)))
    return StoreSummary(path, tuple(sizes), dict(meta["bands"]))


def open_root(path: Where, *, check: bool = True) -> zarr.Group:
    """The root group of a tempocodec store, or a one-line error naming what it is not; with ``check``, also when
    it lacks an object, or holds one, that its integrity record does not say (keys compared only)."""
    if not exists(path):
        raise TempocodecError(f"{path}: no such store")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = zarr.open_group(zarr_target(path), mode="r")
    except Exception as err:  # zarr raises several types for a damaged or foreign hierarchy
        raise TempocodecError(f"{path}: not a readable Zarr store ({type(err).__name__}: {err})") from None
    meta = root.attrs.get("tempocodec")
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise TempocodecError(f"{path}: not a tempocodec store (no '{STORE_FORMAT}' attribute)")
    record = integrity.read_record(meta, path) if check else None
    if record is not None:
        integrity.check_listed(root, record, path)
    return root


def is_store(path: Path) -> bool:
    """Whether ``path`` is a store this package wrote: a Zarr group (v2 or v3) whose root attribute ``tempocodec``
    has a format ``tempocodec-store/...`` (this version or another)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = zarr.open_group(path, mode="r").attrs.get("tempocodec")
    except Exception:  # not a Zarr group, or an unreadable one
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith(STORE_FORMAT.split("/")[0] + "/")


@contextlib.contextmanager
def reading(path: Where, what: str) -> Iterator[None]:
    """Turn a fault in reading or decoding the stored data of ``path`` into a one-line error naming the store."""
    try:
        yield
    except TempocodecError:
        raise
    except Exception as err:  # zarr, numcodecs and the shard index reader raise many types on damaged bytes
        fault = " ".join(str(err).split())[:300]
        raise TempocodecError(f"{path}: damaged store: cannot read {what} ({type(err).__name__}: {fault})") from None


def _open_group(path: Where, group: str | None) -> xr.Dataset:
    """One group of a store as a lazy Dataset, values raw, every block read through :func:`reading`."""
    where = group or "the root group"
    from dask.array.core import getter  # here: info opens no lazy group and needs no dask.array

    def read_block(array, key, asarray=True, lock=None):  # dask's getter, its faults named (store, array, block)
        with reading(path, f"{_array_path(array) or where} block {_block_name(key)}"):
            return getter(array, key, asarray=asarray, lock=lock)

    with reading(path, where):
        return xr.open_zarr(zarr_target(path), group=group, mask_and_scale=False, decode_times=False, consolidated=True,
                            from_array_kwargs={"getitem": read_block})


def _array_path(wrapped: object) -> str | None:
    """The path in the store of the zarr array under xarray's lazy wrappers (None where it cannot be told)."""
    for _ in range(8):
        if isinstance(wrapped, zarr.Array):
            return wrapped.path
        inner = getattr(wrapped, "array", None)
        wrapped = inner if inner is not None else getattr(wrapped, "_array", None)
    return None


def _block_name(key: tuple) -> str:
    """A block's index, a tuple of slices, as ``[0:64, 0:512, 0:1028]``."""
    return "[" + ", ".join(f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k) for k in key) + "]"


# --------------------------------------------------------------------------------------------------- decompress


def open_store(path: StoreTarget, band: str) -> xr.Dataset:
    """One band of a store as a lazy xarray Dataset (radiance decoded chunk by chunk), values and fills raw.

    The band's stored objects are checked first (:func:`check_arrays`): zarr reads a missing chunk as fill and the
    codec decoding a chunk cannot tell where the chunk lies, so this is where lost, moved or swapped ones are caught.
    """
    path = locate_store(path)
    root = open_root(path)
    bands = store_meta(root)["bands"]
    if band not in bands:
        raise TempocodecError(f"{path}: no band {band} (the store holds {', '.join(bands)})")
    with reading(path, band):
        names = store_node(root, band, zarr.Group, path).array_keys()
        check_arrays(root, [f"{band}/{name}" for name in names], path)
    return without_codecs(_open_group(path, band))


def check_arrays(root: zarr.Group, arrays: list[str], path: Where) -> None:
    """Raise unless each of the ``arrays`` (paths from the root) holds the very objects it was written with (the
    integrity record's CRC-32, where the store has one; zarr would read a missing one as fill), and each payload of a
    VAE-coded radiance is whole (:func:`tempocodec.codec.payload.unpack`) and lies at the chunk grid position it
    records, before any model runs. Reads every object once (a store is small)."""
    meta = store_meta(root)
    record = integrity.read_record(meta, path)
    if record is not None:
        integrity.check_contents(root, arrays, record, path)
    for name in arrays:
        band, _, variable = name.rpartition("/")
        if variable == "radiance" and meta["bands"].get(band, {}).get("radiance") == "vae":
            config, chunks = read_stored_chunks(store_node(root, name, zarr.Array, path))
            for at, chunk in chunks.items():
                payload.unpack(chunk, where=f"{path}: damaged store: {name} chunk {at}", chunk_shape=config.chunk_shape)


@bounded_workers()
def decompress_store(src: StoreTarget, dst: str | os.PathLike, *, overwrite: bool = False, progress: bool = True,
                     deflate: int | None = None) -> Path:
    """Write the granule held in the store ``src`` as a TEMPO-layout L1B netCDF file ``dst`` (atomically; an existing
    ``dst`` is replaced only with ``overwrite`` and only when it is a netCDF-4 file). ``deflate``: the file's deflate
    level 0..9 (0: uncompressed; None: the original files' level 1 + shuffle)."""
    from tempocodec.granule.l1b import write_l1b
    from tempocodec.granule.netcdf_write import deflate_level, on_write

    deflate_level(deflate)  # a bad level is refused before anything is read
    src, dst = locate_store(src), Path(dst)
    replace = NETCDF_FILE if overwrite else None
    check_target(dst, replace)
    root = open_root(src)
    meta = store_meta(root)
    dtypes = _attribute_dtypes(meta.get("attribute_dtypes", {}), src)
    with reading(src, "the root group"):
        check_arrays(root, list(root.array_keys()), src)
    root_ds = _open_group(src, None)
    attrs = provenance.with_history(_typed_attrs(root_ds.attrs, "/", dtypes), provenance.decompress_note(src.name))
    root_ds = _typed_vars(root_ds, "/", dtypes)
    root_ds.attrs = {}
    bands = {b: _typed_vars(open_store(src, b), f"/{b}/", dtypes) for b in meta["bands"]}
    total = sum(v.nbytes for ds in (root_ds, *bands.values()) for v in ds.variables.values()) / 1e6
    with progress_bar(enabled=progress) as bar, on_write(lambda n: bar.advance(task, n / 1e6)):
        task = bar.add_task("decompress (MB of variables)", total=total)  # (bound late by the callback)
        write_l1b(dst, L1BGranule(attrs=attrs, root=root_ds, bands=bands), replace=replace, deflate=deflate)
        bar.update(task, completed=total)  # (the few coordinates netCDF4 writes with their definitions)
    return dst


def _attribute_dtypes(record: Any, path: Where) -> dict[str, np.dtype]:
    """The store's record of attribute dtypes (``/group/variable/attribute`` -> dtype name), each checked with
    :func:`_netcdf_attribute_dtype`; raise naming the first that is refused."""
    if not isinstance(record, dict):
        raise TempocodecError(f"{path}: attribute_dtypes must map attribute keys to dtype names, got {record!r:.80}")
    dtypes = {}
    for key, name in record.items():
        dtype = _netcdf_attribute_dtype(name)
        if dtype is None:
            raise TempocodecError(f"{path}: attribute {key!r:.80} has dtype {name!r:.80}; netCDF attributes are int8.."
                                  f"uint64, float32, float64 or strings of at most {MAX_ATTRIBUTE_CHARS} characters")
        dtypes[str(key)] = dtype
    return dtypes


def _netcdf_attribute_dtype(name: Any) -> np.dtype | None:
    """The numpy dtype ``name`` when a netCDF attribute can have it (int8..uint64, float32, float64, a string of at
    most :data:`MAX_ATTRIBUTE_CHARS` characters), else None: a store must not make the reader allocate, say, one 2 GB
    ``S2000000000`` element or build object arrays."""
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except (TypeError, ValueError):
        return None
    if dtype is None:
        return None
    if dtype.kind in "US":
        return dtype if dtype.itemsize // (4 if dtype.kind == "U" else 1) <= MAX_ATTRIBUTE_CHARS else None
    return dtype if dtype.itemsize in _ATTRIBUTE_SIZES.get(dtype.kind, ()) else None


def _typed_vars(ds: xr.Dataset, where: str, dtypes: dict[str, np.dtype]) -> xr.Dataset:
    """``ds`` in native byte order, each variable's attributes given back their recorded numpy dtypes (lossy markers
    kept: the file says which values are reconstructions; the store's own coding of exact values left out)."""
    ds = ds.copy()
    for name in ds.variables:
        attrs = dict(ds[name].attrs)
        attrs.pop(provenance.CODING_ATTR, None)  # how the store holds exact values: not the file's business
        if ds[name].dtype.byteorder not in "=|":  # zarr gives explicit little-endian; netCDF4 wants native
            ds[name] = ds[name].astype(ds[name].dtype.newbyteorder("="))
        ds[name].attrs = _typed_attrs(attrs, f"{where.rstrip('/')}/{name}", dtypes)
    return ds


def _attr_key(where: str, key: str) -> str:
    """The key of one attribute in the store's dtype record: ``/group/variable/attribute`` (``/attribute`` for globals)."""
    return f"{where.rstrip('/')}/{key}"


def _typed_attrs(attrs: dict[str, Any], where: str, dtypes: dict[str, np.dtype]) -> dict[str, Any]:
    """Attributes with numeric values cast back to the dtypes recorded by :func:`_json_attrs`; strings take the
    width of their values (never more than the JSON holds). Raise when a value does not fit its dtype."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if key == "tempocodec":
            continue
        dtype = dtypes.get(_attr_key(where, key))
        if dtype is None:
            out[key] = value
            continue
        try:
            out[key] = np.asarray(value, dtype=dtype.kind if dtype.kind in "US" else dtype)[()]
        except (TypeError, ValueError, OverflowError) as err:
            raise TempocodecError(f"attribute {_attr_key(where, key)!r}: {value!r:.80} is not {dtype} ({err})") from None
    return out
