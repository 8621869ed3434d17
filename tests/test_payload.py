"""Tests for tempocodec.codec.payload: chunk byte layout, masks, sizes and every kind of damaged chunk."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempocodec.codec import payload
from tempocodec.codec.payload import (
    HEADER_SIZE,
    MaskKind,
    Payload,
    compact_mask,
    latent_extent,
    pack,
    unpack,
    valid_extent,
)
from tempocodec.errors import TempocodecError


def make(extent=(64, 64), mask=None, dtype="<f2", n_latent=32, channels=1028, seed=0):
    rng = np.random.default_rng(seed)
    lat = rng.standard_normal((n_latent, *latent_extent(extent, 4))).astype(dtype)
    return Payload(lat, mask, (64, 64), extent, channels, 4)


def test_full_tile_float16_is_latent_plus_28_bytes():
    blob = pack(make())
    assert HEADER_SIZE == 28
    assert len(blob) == 28 + 32 * 16 * 16 * 2
    assert 64 * 64 * 1028 * 4 / len(blob) > 1000


@pytest.mark.parametrize("dtype", ["<f2", "<f4"])
@pytest.mark.parametrize("extent", [(64, 64), (3, 8), (1, 1), (64, 5), (0, 0)])
def test_round_trip_all_valid(dtype, extent):
    p = make(extent, dtype=dtype)
    q = unpack(pack(p))
    assert q.latent.dtype == np.dtype(dtype) and q.latent.shape == (32, *latent_extent(extent, 4))
    np.testing.assert_array_equal(q.latent, p.latent)
    assert (q.mask, q.tile, q.extent, q.n_channels, q.downsample) == (None, (64, 64), extent, 1028, 4)
    assert q.mask_kind is MaskKind.ALL_VALID


def test_pixel_mask_round_trip_is_small():
    mask = np.ones((64, 64), bool)
    mask[10:13, 20:30] = False
    blob = pack(make(mask=mask))
    q = unpack(blob)
    assert q.mask_kind is MaskKind.PIXEL
    np.testing.assert_array_equal(q.mask, mask)
    assert len(blob) - 32 * 16 * 16 * 2 < 100
    np.testing.assert_array_equal(q.valid_channels(), mask * 1028)


def test_element_mask_round_trip():
    rng = np.random.default_rng(1)
    mask = rng.random((16, 7, 9)) > 0.1
    q = unpack(pack(make(extent=(7, 9), mask=mask, channels=16)))
    assert q.mask_kind is MaskKind.ELEMENT
    np.testing.assert_array_equal(q.mask, mask)
    np.testing.assert_array_equal(q.valid_channels(), mask.sum(axis=0))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 64), w=st.integers(1, 64), kind=st.sampled_from(["all", "pixel", "element"]), seed=st.integers(0, 99))
def test_masks_round_trip_any_extent(h, w, kind, seed):
    rng = np.random.default_rng(seed)
    valid = np.ones((5, h, w), bool)
    if kind == "pixel":
        valid[:, rng.random((h, w)) < 0.3] = False
    elif kind == "element":
        valid &= rng.random((5, h, w)) < 0.7
    mask = compact_mask(valid)
    q = unpack(pack(make(extent=(h, w), mask=mask, channels=5, n_latent=3)))
    got = np.ones((5, h, w), bool) if q.mask is None else np.broadcast_to(q.mask, (5, h, w))
    np.testing.assert_array_equal(got, valid)


def test_compact_mask_picks_the_smallest_kind():
    valid = np.ones((4, 6, 6), bool)
    assert compact_mask(valid) is None
    valid[:, 2, 3] = False
    assert compact_mask(valid).shape == (6, 6)
    valid[1, 0, 0] = False
    assert compact_mask(valid).shape == (4, 6, 6)


def test_valid_extent_is_the_bounding_box_from_the_origin():
    valid = np.zeros((3, 64, 64), bool)
    assert valid_extent(valid) == (0, 0)
    valid[2, 40, 3] = True
    valid[0, 5, 50] = True
    assert valid_extent(valid) == (41, 51)


def test_latent_extent_rounds_up():
    assert latent_extent((64, 64), 4) == (16, 16)
    assert latent_extent((3, 8), 4) == (1, 2)
    assert latent_extent((0, 0), 4) == (0, 0)


def _recrc(blob: bytes) -> bytes:
    """``blob`` with its CRC recomputed (to reach the checks behind the CRC)."""
    body = blob[HEADER_SIZE:]
    return blob[: HEADER_SIZE - 4] + struct.pack("<I", zlib.crc32(body, zlib.crc32(blob[: HEADER_SIZE - 4]))) + body


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:10], "truncated tempocodec chunk"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: b"XXXX" + b[4:], "not a tempocodec chunk"),
        (lambda b: b[:4] + b"\x09" + b[5:], "version 9"),
        (lambda b: b[:5] + b"\x08" + b[6:], "unknown flags"),
        (lambda b: b[:6] + b"\x07" + b[7:], "unknown latent dtype"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "CRC-32 mismatch"),
        (lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:], "CRC-32 mismatch"),
        (lambda b: _recrc(b[:-4] + b"\0\0\0\0"), "validity mask does not decompress"),
    ],
)
def test_damaged_chunks_raise_a_clear_error(damage, message):
    mask = np.ones((64, 64), bool)
    mask[0, 0] = False
    blob = pack(make(mask=mask))
    with pytest.raises(TempocodecError, match=message) as info:
        unpack(damage(blob), where="store/radiance/c/0/0/0")
    assert str(info.value).startswith("store/radiance/c/0/0/0: ")


def test_inconsistent_header_is_refused():
    fields = list(payload.HEADER.unpack(pack(make())[:HEADER_SIZE]))
    fields[9] = 65  # valid rows beyond the 64-row tile
    head = payload.HEADER.pack(*fields)
    with pytest.raises(TempocodecError, match="inconsistent chunk header"):
        unpack(head + b"\0" * 20000)


def test_unsupported_latent_dtype_is_refused():
    p = make()
    with pytest.raises(TempocodecError, match="float16 or float32"):
        pack(Payload(p.latent.astype(np.float64), None, p.tile, p.extent, p.n_channels, 4))
