"""Byte layout of one compressed chunk: a 28-byte header, the latent, and the validity mask (see docs/format.md).

A chunk of ``tile_rows × tile_cols`` pixels with ``n_channels`` spectral channels is stored as the encoder's latent
mean over the *valid extent* only: the rows ``0..valid_rows-1`` and columns ``0..valid_cols-1`` that hold any valid
pixel (zarr pads edge chunks at the bottom and right). The latent covers ``ceil(valid_rows / downsample)`` ×
``ceil(valid_cols / downsample)`` cells of the ``downsample``-times coarser latent grid. Which elements of the extent
are valid is stored as one of three masks: none (all valid), a pixel mask ``(valid_rows, valid_cols)`` when each pixel
is valid or invalid in every channel, or an element mask ``(n_channels, valid_rows, valid_cols)``; masks are
bit-packed and zstd-compressed. Everything outside the extent is invalid.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numcodecs
import numpy as np

from tempocodec.errors import TempocodecError

MAGIC = b"TPCV"
VERSION = 1
HEADER = struct.Struct("<4sBBBBHHHHHHII")
HEADER_SIZE = HEADER.size
LATENT_DTYPES: dict[int, np.dtype[np.floating]] = {1: np.dtype("<f2"), 2: np.dtype("<f4")}
MASK_ZSTD_LEVEL = 19
_MASK_KIND_BITS = 0b11
_MASK_ZSTD = numcodecs.Zstd(level=MASK_ZSTD_LEVEL)


class MaskKind(IntEnum):
    """How the validity of the elements inside the valid extent is stored (flag bits 0-1)."""

    ALL_VALID = 0
    PIXEL = 1
    ELEMENT = 2


@dataclass(frozen=True, eq=False)
class Payload:
    """One decoded chunk payload.

    ``latent``: float16 or float32 ``(latent_channels, ceil(valid_rows/downsample), ceil(valid_cols/downsample))``.
    ``mask``: ``None`` (every element of the extent valid), bool ``(valid_rows, valid_cols)`` (pixel mask) or bool
    ``(n_channels, valid_rows, valid_cols)`` (element mask); True means valid.
    ``tile``: the chunk's ``(rows, cols)`` in pixels; ``extent``: ``(valid_rows, valid_cols)`` in pixels.
    """

    latent: np.ndarray
    mask: np.ndarray | None
    tile: tuple[int, int]
    extent: tuple[int, int]
    n_channels: int
    downsample: int

    @property
    def mask_kind(self) -> MaskKind:
        """The kind of :attr:`mask`."""
        if self.mask is None:
            return MaskKind.ALL_VALID
        return MaskKind.PIXEL if self.mask.ndim == 2 else MaskKind.ELEMENT

    @property
    def latent_extent(self) -> tuple[int, int]:
        """Latent rows and columns stored: ``ceil(extent / downsample)``."""
        return latent_extent(self.extent, self.downsample)

    def valid_channels(self) -> np.ndarray:
        """Number of valid channels of each pixel of the extent: int ``(valid_rows, valid_cols)``."""
        if self.mask is None:
            return np.full(self.extent, self.n_channels, dtype=np.int64)
        if self.mask.ndim == 2:
            return self.mask.astype(np.int64) * self.n_channels
        return self.mask.sum(axis=0, dtype=np.int64)


def latent_extent(extent: tuple[int, int], downsample: int) -> tuple[int, int]:
    """Latent ``(rows, cols)`` covering a pixel extent ``(rows, cols)``: each side divided by ``downsample``, rounded up."""
    return math.ceil(extent[0] / downsample), math.ceil(extent[1] / downsample)


def valid_extent(valid: np.ndarray) -> tuple[int, int]:
    """``(rows, cols)`` up to the last row and the last column with any True in ``valid`` (bool ``(C, H, W)``)."""
    pixels = np.any(valid, axis=0)
    rows = np.flatnonzero(pixels.any(axis=1))
    cols = np.flatnonzero(pixels.any(axis=0))
    if rows.size == 0:
        return 0, 0
    return int(rows[-1]) + 1, int(cols[-1]) + 1


def compact_mask(valid: np.ndarray) -> np.ndarray | None:
    """The smallest mask for bool ``valid`` ``(C, h, w)``: None if all True, ``(h, w)`` if each pixel is all or nothing."""
    if valid.all():
        return None
    any_valid = np.any(valid, axis=0)
    if np.array_equal(any_valid, np.all(valid, axis=0)):
        return any_valid
    return valid


def pack(payload: Payload) -> bytes:
    """Serialize ``payload`` to the bytes of one chunk (little-endian, layout in docs/format.md)."""
    dtype_code = _dtype_code(payload.latent.dtype)
    latent = np.ascontiguousarray(payload.latent, dtype=LATENT_DTYPES[dtype_code])
    mask = b"" if payload.mask is None else _MASK_ZSTD.encode(np.packbits(payload.mask, axis=None))
    body = latent.tobytes() + mask
    fields = (
        MAGIC,
        VERSION,
        int(payload.mask_kind),
        dtype_code,
        payload.downsample,
        payload.n_channels,
        latent.shape[0],
        *payload.tile,
        *payload.extent,
        len(mask),
    )
    head = HEADER.pack(*fields, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def unpack(data: bytes | bytearray | memoryview, where: str = "chunk") -> Payload:
    """Parse the bytes of one chunk; raise :class:`TempocodecError` naming ``where`` and the fault if they are bad."""
    data = memoryview(data).cast("B")
    if len(data) < HEADER_SIZE:
        raise TempocodecError(f"{where}: truncated tempocodec chunk ({len(data)} bytes, the header alone is {HEADER_SIZE})")
    magic, version, flags, dtype_code, down, n_chan, n_latent, t_rows, t_cols, rows, cols, mask_len, crc = HEADER.unpack(
        data[:HEADER_SIZE]
    )
    if magic != MAGIC:
        raise TempocodecError(f"{where}: not a tempocodec chunk (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise TempocodecError(f"{where}: tempocodec chunk format version {version} is not supported (this is {VERSION})")
    if flags & ~_MASK_KIND_BITS or (flags & _MASK_KIND_BITS) not in set(MaskKind):
        raise TempocodecError(f"{where}: unknown flags {flags:#04x} in the chunk header")
    if dtype_code not in LATENT_DTYPES:
        raise TempocodecError(f"{where}: unknown latent dtype code {dtype_code} in the chunk header")
    if down < 1 or rows > t_rows or cols > t_cols or (rows == 0) != (cols == 0):
        raise TempocodecError(
            f"{where}: inconsistent chunk header (extent {rows}×{cols} of tile {t_rows}×{t_cols}, downsample {down})"
        )
    dtype = LATENT_DTYPES[dtype_code]
    lat_rows, lat_cols = latent_extent((rows, cols), down)
    latent_len = n_latent * lat_rows * lat_cols * dtype.itemsize
    expected = HEADER_SIZE + latent_len + mask_len
    if len(data) != expected:
        fault = "truncated" if len(data) < expected else "has trailing bytes"
        raise TempocodecError(f"{where}: tempocodec chunk {fault} ({len(data)} bytes, the header says {expected})")
    body = data[HEADER_SIZE:]
    if zlib.crc32(body, zlib.crc32(data[: HEADER_SIZE - 4])) != crc:
        raise TempocodecError(f"{where}: tempocodec chunk is corrupt (CRC-32 mismatch)")
    latent = np.frombuffer(body[:latent_len], dtype=dtype).reshape(n_latent, lat_rows, lat_cols)
    kind = MaskKind(flags & _MASK_KIND_BITS)
    mask_shape = {MaskKind.ALL_VALID: None, MaskKind.PIXEL: (rows, cols), MaskKind.ELEMENT: (n_chan, rows, cols)}[kind]
    mask = None if mask_shape is None else _unpack_mask(body[latent_len:], mask_shape, where)
    return Payload(latent, mask, (t_rows, t_cols), (rows, cols), n_chan, down)


def _unpack_mask(blob: memoryview, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Bool mask of ``shape`` from its zstd-compressed packed bits."""
    count = math.prod(shape)
    try:
        bits = np.frombuffer(_MASK_ZSTD.decode(blob), dtype=np.uint8)
    except RuntimeError as err:
        raise TempocodecError(f"{where}: validity mask does not decompress ({err})") from None
    if bits.size != (count + 7) // 8:
        raise TempocodecError(f"{where}: validity mask has {bits.size} bytes, expected {(count + 7) // 8} for {shape}")
    return np.unpackbits(bits, count=count).astype(bool).reshape(shape)


def _dtype_code(dtype: np.dtype) -> int:
    """Header code of a latent dtype (float16 or float32)."""
    for code, known in LATENT_DTYPES.items():
        if np.dtype(dtype) == known:
            return code
    raise TempocodecError(f"latent dtype {np.dtype(dtype)} is not supported (float16 or float32)")
