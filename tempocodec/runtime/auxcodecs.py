"""Encodings of a band's auxiliary variables (everything but radiance), through standard zarr/numcodecs codecs only.

Every codec here is recorded in the array's own metadata and ships with zarr and numcodecs, so any zarr reader
decodes these arrays without tempocodec (docs/format.md, *Auxiliary variables*):

- geolocation and angles: ``FixedScaleOffset`` to int32 on a fixed grid (step 1e-5° for latitude/longitude and
  their bounds, 1e-4° for angles, 1 m for a float terrain height), ``Delta``, zstd: an absolute error of at most
  half a step plus float32 rounding, within the bound of :data:`BOUNDS`;
- ``radiance_error``: ``BitRound`` to :data:`RADIANCE_ERROR_KEEPBITS` mantissa bits (relative error ≤ 2⁻⁷ < 1 %),
  zstd; fill values pass unchanged (BitRound keeps their exponent and rounds 9.96921e36 to itself);
- everything else (flags, masks, wavelengths, integer terrain height): lossless, zstd (``Delta`` first for the
  integer terrain height).

A lossy encoding is used only where it can hold its bound: a float variable with a fill value, a NaN or a value
outside int32 on its grid stays lossless. With ``lossless=True`` (``compress --lossless-aux``) the caller keeps its
own lossless encoding, as before this module.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numcodecs
import numcodecs.abc
import numpy as np
import xarray as xr
import zarr
from numcodecs.checksum32 import CRC32C
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.codecs.numcodecs import BitRound, Delta, FixedScaleOffset

ZSTD_LEVEL = 9
"""zstd level of the auxiliary arrays: 3× smaller than Blosc-zstd-5 with shuffle on ``radiance_error`` at the same
speed; level 19 is 2× smaller again but 40× slower (docs/benchmarks.md)."""
RADIANCE_ERROR_KEEPBITS = 6
"""Mantissa bits ``radiance_error`` keeps: relative error ≤ 2⁻⁷ (0.78 %)."""


@dataclass(frozen=True)
class Bound:
    """The documented absolute ``bound`` (in the variable's ``units``) and the coarsest ``step`` it is meant for (the
    grid actually used is :func:`_grid`'s, finer near ±180°)."""

    step: float
    bound: float
    units: str


BOUNDS: dict[str, Bound] = {
    **{name: Bound(1e-5, 1e-5, "degrees") for name in ("latitude", "longitude", "latitude_bounds", "longitude_bounds")},
    **{name: Bound(1e-4, 1e-4, "degrees") for name in ("solar_zenith_angle", "solar_azimuth_angle",
                                                       "viewing_zenith_angle", "viewing_azimuth_angle")},
    "terrain_height": Bound(1.0, 1.0, "m"),
}
"""The lossy auxiliary variables, by name. Half a step plus float32 rounding stays within the bound (at 180°,
float32 rounds by 7.6e-6°, so the grid of lat/lon is 1e-5° but its error at most 5e-6° + 3.8e-6°)."""


@contextlib.contextmanager
def quiet_codecs() -> Iterator[None]:
    """Silence zarr's note that numcodecs codecs are outside the v3 specification (they ship with zarr-python, which
    reads them), and the cast warning of ``FixedScaleOffset`` on the fill zarr pads edge chunks with (never read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr", category=UserWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered in cast", category=RuntimeWarning)
        yield


def _grid(values: np.ndarray, bound: float) -> tuple[float, float] | None:
    """The grid ``(step, offset)`` on which float32 ``values`` decode within ``bound``, or None when there is none.

    FixedScaleOffset decodes in float32 (``index / scale + offset``): the division rounds by at most one unit in
    the last place of the span, the addition by half a unit of the largest value (7.6e-6 at 180°). The step is
    twice what remains of the bound, rounded down to 1, 2 or 5 × 10ⁿ; the offset is the values' midpoint."""
    if values.size == 0 or not np.isfinite(values).all():
        return None
    lo, hi = float(values.min()), float(values.max())
    margin = 0.5 * float(np.spacing(np.float32(max(abs(lo), abs(hi))))) + float(np.spacing(np.float32(hi - lo)))
    if margin >= bound:
        return None
    room = 2 * (bound - margin)
    decade = 10.0 ** np.floor(np.log10(room))
    step = max(m * decade for m in (1, 2, 5) if m * decade <= room)
    offset = round((lo + hi) / 2 / step) * step
    return (step, offset) if (hi - lo) / step < 2**30 else None


def blosc_lossless(zarr_format: int, typesize: int) -> dict[str, list[Any]]:
    """The codec keys of a plain lossless array's encoding: Blosc-zstd with byte shuffle, then a CRC-32C of the
    stored bytes (Blosc has no checksum of its own). Zarr v2 has one compressor, so there Blosc runs as the filter
    and the checksum as the compressor."""
    if zarr_format == 3:
        return {"compressors": [BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=typesize), Crc32cCodec()]}
    return {"filters": [numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)],
            "compressors": [CRC32C()]}


LOSSLESS_AUX_KEEPBITS = 7
"""Mantissa bits ``--lossless-aux`` keeps of ``radiance_error`` (release 0.2's rounding)."""


def bitround_lossless(zarr_format: int) -> tuple[dict[str, list[Any]], str]:
    """``--lossless-aux``'s ``radiance_error``: :func:`blosc_lossless` of float32 after a ``BitRound`` to
    :data:`LOSSLESS_AUX_KEEPBITS` mantissa bits, the rounding recorded in the array's own codec pipeline, and its
    ``tempocodec_lossy`` note (release 0.2's text, which :func:`lossy_bound` reads)."""
    keepbits, lossless = LOSSLESS_AUX_KEEPBITS, blosc_lossless(zarr_format, 4)
    note = f"mantissa rounded to {keepbits} bits (numcodecs.BitRound), relative error <= 2^-{keepbits + 1}"
    if zarr_format == 3:
        return {"filters": [BitRound(keepbits=keepbits)], **lossless}, note
    return {"filters": [numcodecs.BitRound(keepbits=keepbits), *lossless["filters"]],
            "compressors": lossless["compressors"]}, note


def _tails(zarr_format: int, typesize: int) -> list[list[Any]]:
    """The candidate lossless stages after the filters, each ending in a CRC-32C of the stored bytes (the checksum
    ``verify`` expects of every non-radiance array): zstd, Blosc-zstd with byte shuffle, with bit shuffle."""
    if zarr_format == 3:
        return [[ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()],
                *([BloscCodec(cname="zstd", clevel=5, shuffle=shuffle, typesize=typesize), Crc32cCodec()]
                  for shuffle in ("shuffle", "bitshuffle"))]
    return [[numcodecs.Zstd(level=ZSTD_LEVEL), CRC32C()],
            *([numcodecs.Blosc(cname="zstd", clevel=5, shuffle=shuffle), CRC32C()]
              for shuffle in (numcodecs.Blosc.SHUFFLE, numcodecs.Blosc.BITSHUFFLE))]


def _v2_codec(codec: Any) -> numcodecs.abc.Codec:
    """The numcodecs codec a zarr v3 ``zarr.codecs.numcodecs`` wrapper (or a v2 codec) stands for."""
    if isinstance(codec, numcodecs.abc.Codec):
        return codec
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=codec.level)
    if isinstance(codec, BloscCodec):
        shuffle = numcodecs.Blosc.BITSHUFFLE if codec.shuffle.value == "bitshuffle" else numcodecs.Blosc.SHUFFLE
        return numcodecs.Blosc(cname="zstd", clevel=codec.clevel, shuffle=shuffle)
    return numcodecs.get_codec({"id": codec.codec_name.split(".", 1)[1], **codec.codec_config})


def _stored_size(values: np.ndarray, codecs: list[Any]) -> int:
    """Bytes of ``values`` encoded by ``codecs`` in one piece (what choosing between pipelines needs)."""
    data: Any = np.ascontiguousarray(values)
    for codec in codecs:
        data = _v2_codec(codec).encode(data)
    return len(data)


def _rounded() -> list[Any]:
    """The filters of a rounded ``radiance_error``; the first of :func:`_tails` (zstd) follows, as for every spectral
    array."""
    return [BitRound(keepbits=RADIANCE_ERROR_KEEPBITS)]


def rounded_size(values: np.ndarray) -> int:
    """Bytes float32 ``radiance_error`` ``values`` take in the bit-rounded encoding :func:`aux_encoding` gives it."""
    with quiet_codecs():
        return _stored_size(np.asarray(values, np.float32), [*_rounded(), _tails(3, 4)[0][0]])


def _encoding(filters: list[Any], values: np.ndarray | None, zarr_format: int, itemsize: int) -> dict[str, Any]:
    """An encoding with ``filters`` and the smallest of the :func:`_tails` on ``values`` (zstd when None: the
    spectral arrays, too large to try each); on v2 the numcodecs equivalents (v2 has a single compressor: the
    lossless stage joins the filters, the checksum is the compressor)."""
    tails = _tails(zarr_format, itemsize)
    tail = tails[0] if values is None else min(tails, key=lambda t: _stored_size(values, [*filters, t[0]]))
    if zarr_format == 3:
        return {"filters": filters, "compressors": tail}
    return {"filters": [*(_v2_codec(f) for f in filters), tail[0]], "compressors": [tail[1]]}


def aux_encoding(var: xr.DataArray, name: str, zarr_format: int) -> tuple[dict[str, Any], str | None]:
    """The encoding keys (filters, compressors) of one auxiliary variable and, when it is lossy, the text of its
    ``tempocodec_lossy`` attribute (method and bound). ``var`` is the source variable (its values are read for the
    grid's range: a 2-D or 3-D geolocation array of a granule, small)."""
    bound, size = BOUNDS.get(name), var.dtype.itemsize
    if var.ndim == 3 and var.shape[2] > 8:  # spectral: radiance_error, pixel_quality_flag
        if name != "radiance_error" or var.dtype != np.float32:
            return _encoding([], None, zarr_format, size), None
        note = (f"numcodecs BitRound(keepbits={RADIANCE_ERROR_KEEPBITS}) + zstd: relative error <= "
                f"2^-{RADIANCE_ERROR_KEEPBITS + 1}; fill values exact")
        return _encoding(_rounded(), None, zarr_format, size), note
    values = np.asarray(var.values)
    if bound is not None and var.dtype.kind == "f" and not _has_fill(var):
        grid = _grid(values.astype(np.float64), bound.bound) if var.dtype == np.float32 else None
        if grid is not None:
            step, offset = grid
            codecs = [FixedScaleOffset(offset=offset, scale=round(1 / step, 6), dtype=var.dtype.str, astype="<i4"),
                      Delta(dtype="<i4")]
            note = (f"numcodecs FixedScaleOffset(offset={offset:g}, scale={1 / step:g}) + Delta + zstd: "
                    f"absolute error <= {bound.bound:g} {bound.units}")
            return _encoding(codecs, values, zarr_format, size), note
    if var.dtype.kind in "iu" and name == "terrain_height":
        return _encoding([Delta(dtype=var.dtype.str)], values, zarr_format, size), None
    return _encoding([], values, zarr_format, size), None


def _has_fill(var: xr.DataArray) -> bool:
    """Whether float ``var`` holds its fill value, a NaN or a value of magnitude ≥ 1e30 (never put on a grid)."""
    values = np.asarray(var.values)
    fill = var.encoding.get("_FillValue", var.attrs.get("_FillValue"))
    bad = ~np.isfinite(values) | (np.abs(values) >= 1e30)
    if fill is not None:
        bad |= values == np.asarray(fill, dtype=values.dtype)
    return bool(bad.any())


def lossy_bound(name: str, note: str) -> tuple[str, float] | None:
    """``("absolute", bound)`` or ``("relative", bound)`` of a variable stored with the ``tempocodec_lossy``
    text ``note`` written here; None for notes of other writers."""
    if name == "radiance_error" and note.startswith("numcodecs BitRound"):
        keepbits = int(note.split("keepbits=")[1].split(")")[0])
        return "relative", 2.0 ** -(keepbits + 1)
    if name == "radiance_error" and note.startswith("mantissa rounded to "):  # --lossless-aux
        return "relative", 2.0 ** -(int(note.split()[3]) + 1)
    if name in BOUNDS and note.startswith("numcodecs FixedScaleOffset"):
        return "absolute", BOUNDS[name].bound
    return None


def within_bound(name: str, attrs: dict[str, Any], original: np.ndarray, stored: np.ndarray) -> bool:
    """Whether ``stored`` (same shape) holds ``original`` within the bound its ``tempocodec_lossy`` attribute in
    ``attrs`` states (exactly, NaN matching NaN, where it states none): every value checked, fill values exact."""
    note = attrs.get("tempocodec_lossy")
    bound = lossy_bound(name, note) if isinstance(note, str) else None
    if bound is None:
        return bool(np.array_equal(original, stored, equal_nan=True))
    kind, limit = bound
    a, b = original.astype(np.float64), stored.astype(np.float64)
    usable = np.isfinite(a) & (np.abs(a) < 1e30)
    if not np.array_equal(a[~usable], b[~usable], equal_nan=True):
        return False
    scale = np.abs(a[usable]) if kind == "relative" else 1.0
    return bool((np.abs(a[usable] - b[usable]) <= limit * scale).all())


def codec_names(arr: zarr.Array) -> str:
    """The array's codec chain as ``name+name+...`` from its own metadata (zarr v3: filters, serializer when not
    ``bytes``, compressors, inside ``sharding_indexed[...]``; v2: filters then compressor), e.g.
    ``fixedscaleoffset+delta+zstd+crc32c`` or ``sharding[tempocodec.vae]``."""
    meta = cast(dict[str, Any], arr.metadata.to_dict())
    if meta.get("zarr_format") == 2:
        parts = [c["id"] for c in (meta.get("filters") or [])] + ([meta["compressor"]["id"]] if meta.get("compressor") else [])
        return "+".join(parts) or "raw"
    return _v3_names(meta["codecs"])


def _v3_names(codecs: list[dict[str, Any]]) -> str:
    """``name+name`` of a v3 codec list (``numcodecs.`` prefixes and the plain ``bytes`` serializer left out)."""
    names = []
    for codec in codecs:
        name = codec["name"]
        if name == "sharding_indexed":
            names.append(f"sharding[{_v3_names(codec['configuration']['codecs'])}]")
        elif name != "bytes":
            names.append(name.removeprefix("numcodecs."))
    return "+".join(names) or "raw"


def bound_text(name: str, attrs: Mapping[str, Any]) -> str:
    """The error bound of a stored array, from the ``tempocodec_lossy`` attribute among its ``attrs``: ``exact``
    when it has none."""
    note = attrs.get("tempocodec_lossy")
    if not isinstance(note, str):
        return "exact"
    bound = lossy_bound(name, note)
    if bound is not None:
        kind, value = bound
        return f"abs <= {value:g} {BOUNDS[name].units}" if kind == "absolute" else f"rel <= {value:.2%}"
    return "model card" if name == "radiance" else "lossy"


CODEC_KEYS = ("serializer", "compressors", "compressor", "filters", "chunks", "shards", "preferred_chunks")
"""The encoding keys that name how a variable was stored; :func:`without_codecs` drops them."""


def without_codecs(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the codec chain and chunking dropped from each variable's ``.encoding`` (dtype and fill kept), so
    that ``ds.isel(...).to_zarr(...)`` writes decoded values with zarr's default lossless codecs instead of coding
    lossy data a second time (docs/format.md, *Writing your own Dataset*)."""
    for var in ds.variables.values():
        for key in CODEC_KEYS:
            var.encoding.pop(key, None)
    return ds
