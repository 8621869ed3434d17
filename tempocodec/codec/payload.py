"""Byte layout of one compressed chunk: a 36-byte header, the latent, and the validity mask (see docs/format.md).

A chunk of ``tile_rows × tile_cols`` pixels with ``n_channels`` spectral channels is stored as the encoder's latent
mean over the *valid extent* only: the rows ``0..valid_rows-1`` and columns ``0..valid_cols-1`` that hold any valid
pixel (zarr pads edge chunks at the bottom and right). The latent covers ``ceil(valid_rows / downsample)`` ×
``ceil(valid_cols / downsample)`` cells of the ``downsample``-times coarser latent grid. Which elements of the extent
are valid is stored as one of three masks: none (all valid), a pixel mask ``(valid_rows, valid_cols)`` when each pixel
is valid or invalid in every channel, or an element mask ``(n_channels, valid_rows, valid_cols)``; masks are
bit-packed and zstd-compressed. Everything outside the extent is invalid. A chunk of an error-bounded array then
holds its residual (flag bit 2: ``<I length>`` and the bytes of :mod:`tempocodec.codec.residual`); readers before
the residual layer refuse such a chunk (unknown flag) rather than decode it without its residual.

The header (version 2) also records the chunk's ``(row, col)`` in the array's chunk grid, so that a chunk found at
another place is refused; the codec cannot know it while encoding, so it writes "not recorded" and the store writer
fills it in afterwards (:func:`with_position`). Version 1 payloads (28-byte header, no position) still decode.
Nothing is decompressed beyond the size the header implies, and the header must match the array's chunk shape
before anything is.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import numcodecs
import numpy as np

from tempocodec.codec import entropy
from tempocodec.errors import TempocodecError

MAGIC = b"TPCV"
VERSION = 2
HEADER = struct.Struct("<4sBBBBHHHHHHIIII")
"""Version 2: magic, version, flags, dtype, downsample, channels, latent channels, tile rows and columns, extent
rows and columns, mask bytes, chunk grid row and column, CRC-32."""
HEADER_SIZE = HEADER.size
HEADER_V1 = struct.Struct("<4sBBBBHHHHHHII")
"""Version 1: as version 2 without the chunk position."""
NO_POSITION = 0xFFFFFFFF
"""Chunk grid row and column of a payload whose position is not recorded."""
LATENT_DTYPES: dict[int, np.dtype[np.floating]] = {1: np.dtype("<f2"), 2: np.dtype("<f4"), 3: np.dtype("<f4")}
QUANTIZED = 3
"""Latent dtype code of quantized latents: ``<f step>`` then the multiples of ``step`` entropy-coded
(:func:`tempocodec.codec.entropy.encode_rows_gaussian`, one Gaussian per latent channel); they decode as float32."""
_STEP = struct.Struct("<f")
_QUANTIZED_HEAD = _STEP.size + 12  # the step, then the entropy coder's <i lo> <i hi> <I code_words>
MASK_ZSTD_LEVEL = 19
_MASK_KIND_BITS = 0b11
RESIDUAL_FLAG = 0b100
"""Flag bit 2: the mask is followed by ``<I length>`` and the chunk's residual (:mod:`tempocodec.codec.residual`)."""
_RESIDUAL_LEN = struct.Struct("<I")
_MASK_ZSTD = numcodecs.Zstd(level=MASK_ZSTD_LEVEL)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


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
    ``tile``: the chunk's ``(rows, cols)`` in pixels; ``extent``: ``(valid_rows, valid_cols)`` in pixels;
    ``position``: the chunk's ``(row, col)`` in the array's chunk grid, None where not recorded;
    ``residual``: the residual layer's bytes (empty: none); ``latent_step``: the quantization step of a quantized
    latent (its values are multiples of it; None: stored as its float dtype).
    """

    latent: np.ndarray
    mask: np.ndarray | None
    tile: tuple[int, int]
    extent: tuple[int, int]
    n_channels: int
    downsample: int
    position: tuple[int, int] | None = None
    residual: bytes = b""
    latent_step: float | None = None

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
    if payload.latent_step is None:
        dtype_code = _dtype_code(payload.latent.dtype)
        latent_bytes = np.ascontiguousarray(payload.latent, dtype=LATENT_DTYPES[dtype_code]).tobytes()
    else:
        dtype_code, latent_bytes = QUANTIZED, _quantized_bytes(payload.latent, payload.latent_step)
    mask = b"" if payload.mask is None else _MASK_ZSTD.encode(np.packbits(payload.mask, axis=None))
    body = latent_bytes + mask
    if payload.residual:
        body += _RESIDUAL_LEN.pack(len(payload.residual)) + payload.residual
    fields = (
        MAGIC,
        VERSION,
        int(payload.mask_kind) | (RESIDUAL_FLAG if payload.residual else 0),
        dtype_code,
        payload.downsample,
        payload.n_channels,
        payload.latent.shape[0],
        *payload.tile,
        *payload.extent,
        len(mask),
        *_position_fields(payload.position),
    )
    head = HEADER.pack(*fields, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def _quantized_bytes(latent: np.ndarray, step: float) -> bytes:
    """``<f step>`` and the entropy code of ``latent`` ``(Z, h, w)`` in multiples of ``step``."""
    q = np.rint(np.asarray(latent, np.float64) / np.float32(step))
    if np.abs(q).max(initial=0) >= 2**30:
        raise TempocodecError(f"latent values too large for quantization step {step}")
    return _STEP.pack(step) + entropy.encode_rows_gaussian(q.astype(np.int32).reshape(latent.shape[0], -1))


def _quantized_length(body: memoryview, n_latent: int, where: str) -> int:
    """Bytes of the quantized latent at the start of ``body`` (from its length fields, before any decoding)."""
    if len(body) < _QUANTIZED_HEAD:
        raise TempocodecError(f"{where}: tempocodec chunk truncated in its latent")
    (n_words,) = struct.unpack("<I", body[_QUANTIZED_HEAD - 4 : _QUANTIZED_HEAD])
    return _QUANTIZED_HEAD + 4 * n_latent + 4 * n_words


def _dequantized(body: memoryview, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """The float32 latent ``shape`` of a quantized latent section ``body``."""
    (step,) = _STEP.unpack(body[: _STEP.size])
    if not (np.isfinite(step) and step > 0):
        raise TempocodecError(f"{where}: latent quantization step {step} is not a positive number")
    q, _ = entropy.decode_rows_gaussian(body[_STEP.size :], shape[0], shape[1] * shape[2], where)
    return (q.astype(np.float32) * np.float32(step)).reshape(shape)


def _position_fields(position: tuple[int, int] | None) -> tuple[int, int]:
    """Header fields of a chunk grid position (:data:`NO_POSITION` twice for None)."""
    if position is None:
        return NO_POSITION, NO_POSITION
    if not all(0 <= p < NO_POSITION for p in position):
        raise TempocodecError(f"chunk grid position {position} does not fit the chunk header")
    return int(position[0]), int(position[1])


def with_position(data: bytes | bytearray | memoryview, position: tuple[int, int], where: str = "chunk") -> bytes:
    """The version 2 payload ``data`` with its chunk grid ``position`` recorded and its CRC-32 recomputed (same length).

    Raises :class:`TempocodecError` naming ``where`` unless ``data`` is an intact version 2 payload.
    """
    data = bytes(data)
    if len(data) < HEADER_SIZE or data[4] != VERSION:
        raise TempocodecError(f"{where}: not a version {VERSION} tempocodec chunk, its position cannot be recorded")
    fields = list(HEADER.unpack(data[:HEADER_SIZE]))
    body = data[HEADER_SIZE:]
    if zlib.crc32(body, zlib.crc32(data[: HEADER_SIZE - 4])) != fields[-1]:
        raise TempocodecError(f"{where}: tempocodec chunk is corrupt (CRC-32 mismatch)")
    fields[-3:-1] = _position_fields(position)
    head = HEADER.pack(*fields[:-1], 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def recorded_position(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """The chunk grid position a payload's header records (None for version 1, not recorded, or not a payload);
    the rest of the payload is not checked here (:func:`unpack` does)."""
    data = memoryview(data).cast("B")
    if len(data) < HEADER_SIZE or bytes(data[:4]) != MAGIC or data[4] != VERSION:
        return None
    row, col = HEADER.unpack(data[:HEADER_SIZE])[-3:-1]
    return None if row == NO_POSITION and col == NO_POSITION else (row, col)


class _Header(NamedTuple):
    """The fields of a payload header (either version); ``size``: its length in bytes."""

    size: int
    kind: MaskKind
    dtype: np.dtype
    downsample: int
    n_channels: int
    n_latent: int
    tile: tuple[int, int]
    extent: tuple[int, int]
    mask_len: int
    position: tuple[int, int] | None
    crc: int
    residual: bool
    quantized: bool


def _header(data: memoryview, where: str) -> _Header:
    """The checked header of the payload ``data`` (version 1 or 2); raise naming ``where`` and the fault."""
    if len(data) < HEADER_V1.size:
        raise TempocodecError(f"{where}: truncated tempocodec chunk ({len(data)} bytes, the header alone is {HEADER_V1.size})")
    if bytes(data[:4]) != MAGIC:
        raise TempocodecError(f"{where}: not a tempocodec chunk (magic {bytes(data[:4])!r}, expected {MAGIC!r})")
    layout = {1: HEADER_V1, VERSION: HEADER}.get(data[4])
    if layout is None:
        raise TempocodecError(f"{where}: tempocodec chunk format version {data[4]} is not supported (this reads 1 and {VERSION})")
    if len(data) < layout.size:
        raise TempocodecError(f"{where}: truncated tempocodec chunk ({len(data)} bytes, the header alone is {layout.size})")
    _, _, flags, dtype_code, down, n_chan, n_latent, t_rows, t_cols, rows, cols, mask_len, *place, crc = layout.unpack(
        data[: layout.size]
    )
    if flags & ~(_MASK_KIND_BITS | RESIDUAL_FLAG) or (flags & _MASK_KIND_BITS) not in set(MaskKind):
        raise TempocodecError(f"{where}: unknown flags {flags:#04x} in the chunk header")
    if dtype_code not in LATENT_DTYPES:
        raise TempocodecError(f"{where}: unknown latent dtype code {dtype_code} in the chunk header")
    kind = MaskKind(flags & _MASK_KIND_BITS)
    if down < 1 or rows > t_rows or cols > t_cols or (rows == 0) != (cols == 0) or (rows == 0 and kind != MaskKind.ALL_VALID):
        raise TempocodecError(
            f"{where}: inconsistent chunk header (extent {rows}×{cols} of tile {t_rows}×{t_cols}, downsample {down}, "
            f"mask kind {kind.name.lower()})"
        )
    position = None if not place or place == [NO_POSITION, NO_POSITION] else (place[0], place[1])
    return _Header(layout.size, kind, LATENT_DTYPES[dtype_code], down, n_chan, n_latent, (t_rows, t_cols),
                   (rows, cols), mask_len, position, crc, bool(flags & RESIDUAL_FLAG), dtype_code == QUANTIZED)


def unpack(data: bytes | bytearray | memoryview, where: str = "chunk",
           chunk_shape: tuple[int, int, int] | None = None) -> Payload:
    """Parse the bytes of one chunk; raise :class:`TempocodecError` naming ``where`` and the fault if they are bad.

    ``chunk_shape``: the array's chunk ``(tile_rows, tile_cols, n_channels)``; when given, the header must state it
    before anything is decompressed. Nothing decompresses beyond the size the header implies either way.
    """
    data = memoryview(data).cast("B")
    head = _header(data, where)
    if chunk_shape is not None and (*head.tile, head.n_channels) != tuple(chunk_shape):
        raise TempocodecError(f"{where}: chunk header says tile {head.tile} of {head.n_channels} channels, the array's "
                              f"chunks are {tuple(chunk_shape)}")
    lat_rows, lat_cols = latent_extent(head.extent, head.downsample)
    quantized = head.quantized
    latent_len = (_quantized_length(data[head.size :], head.n_latent, where) if quantized
                  else head.n_latent * lat_rows * lat_cols * head.dtype.itemsize)
    expected = head.size + latent_len + head.mask_len
    if head.residual:
        residual_at = expected + _RESIDUAL_LEN.size
        known = len(data) >= residual_at
        expected = residual_at + (_RESIDUAL_LEN.unpack(data[expected:residual_at])[0] if known else 0)
    if len(data) != expected:
        fault = "truncated" if len(data) < expected else "has trailing bytes"
        raise TempocodecError(f"{where}: tempocodec chunk {fault} ({len(data)} bytes, the header says {expected})")
    body = data[head.size :]
    if zlib.crc32(body, zlib.crc32(data[: head.size - 4])) != head.crc:
        raise TempocodecError(f"{where}: tempocodec chunk is corrupt (CRC-32 mismatch)")
    shape3 = (head.n_latent, lat_rows, lat_cols)
    latent = (_dequantized(body[:latent_len], shape3, where) if quantized
              else np.frombuffer(body[:latent_len], dtype=head.dtype).reshape(shape3))
    rows, cols = head.extent
    mask_shape = {MaskKind.ALL_VALID: None, MaskKind.PIXEL: (rows, cols), MaskKind.ELEMENT: (head.n_channels, rows, cols)}
    shape = mask_shape[head.kind]
    mask_end = latent_len + head.mask_len
    mask = None if shape is None else _unpack_mask(body[latent_len:mask_end], shape, where)
    residual = bytes(body[mask_end + _RESIDUAL_LEN.size :]) if head.residual else b""
    step = _STEP.unpack(body[: _STEP.size])[0] if quantized else None
    return Payload(latent, mask, head.tile, head.extent, head.n_channels, head.downsample, head.position, residual,
                   step)


def _unpack_mask(blob: memoryview, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Bool mask of ``shape`` from its zstd-compressed packed bits, decompressed into a buffer of exactly the
    ``ceil(prod(shape) / 8)`` bytes it must take: a frame declaring any other size is refused unread."""
    count = math.prod(shape)
    nbytes = (count + 7) // 8
    declared = _zstd_content_size(blob)
    if declared != nbytes:
        said = "no size" if declared is None else f"{declared} bytes"
        raise TempocodecError(f"{where}: validity mask does not decompress to {nbytes} bytes for {shape} (its zstd frame "
                              f"declares {said})")
    bits = np.empty(nbytes, dtype=np.uint8)
    try:
        _MASK_ZSTD.decode(blob, out=bits)
    except (RuntimeError, ValueError) as err:
        raise TempocodecError(f"{where}: validity mask does not decompress ({err})") from None
    return np.unpackbits(bits, count=count).astype(bool).reshape(shape)


def _zstd_content_size(blob: memoryview) -> int | None:
    """The content size the header of the zstd frame ``blob`` declares (RFC 8878, 3.1.1.1); None when ``blob`` is
    not a zstd frame or its header declares no size."""
    if len(blob) < 5 or bytes(blob[:4]) != _ZSTD_MAGIC:
        return None
    descriptor = blob[4]
    single_segment = (descriptor >> 5) & 1
    size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    start = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 0b11]
    if size_bytes == 0 or len(blob) < start + size_bytes:
        return None
    value = int.from_bytes(blob[start : start + size_bytes], "little")
    return value + 256 if size_bytes == 2 else value


def _dtype_code(dtype: np.dtype) -> int:
    """Header code of a latent dtype (float16 or float32)."""
    for code, known in LATENT_DTYPES.items():
        if np.dtype(dtype) == known:
            return code
    raise TempocodecError(f"latent dtype {np.dtype(dtype)} is not supported (float16 or float32)")
