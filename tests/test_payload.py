"""Tests for tempocodec.codec.payload: chunk byte layout, masks, sizes and every kind of damaged chunk."""

import struct
import tracemalloc
import zlib

import numcodecs
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


def test_full_tile_float16_is_latent_plus_36_bytes():
    blob = pack(make())
    assert HEADER_SIZE == 36
    assert len(blob) == 36 + 32 * 16 * 16 * 2
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
    fields[9], fields[10], fields[2] = 0, 0, int(MaskKind.PIXEL)  # a mask for an empty extent
    with pytest.raises(TempocodecError, match="inconsistent chunk header"):
        unpack(payload.HEADER.pack(*fields))


def test_unsupported_latent_dtype_is_refused():
    p = make()
    with pytest.raises(TempocodecError, match="float16 or float32"):
        pack(Payload(p.latent.astype(np.float64), None, p.tile, p.extent, p.n_channels, 4))


# --------------------------------------------------------------------------------------------------- positions, versions


def _v1(p: Payload) -> bytes:
    """``p`` as a version 1 payload (28-byte header, no position), as release 0.1.0 wrote it."""
    blob = pack(p)
    fields = list(payload.HEADER.unpack(blob[:HEADER_SIZE]))
    fields[1] = 1
    head = payload.HEADER_V1.pack(*fields[:12], 0)[:-4]
    body = blob[HEADER_SIZE:]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def test_position_is_recorded_and_read_back():
    blob = pack(make())
    assert unpack(blob).position is None and payload.recorded_position(blob) is None
    placed = payload.with_position(blob, (3, 70000))
    assert len(placed) == len(blob) and payload.recorded_position(placed) == (3, 70000)
    q = unpack(placed)
    assert q.position == (3, 70000)
    np.testing.assert_array_equal(q.latent, unpack(blob).latent)
    assert unpack(pack(Payload(q.latent, None, (64, 64), (64, 64), 1028, 4, (5, 6)))).position == (5, 6)


def test_a_damaged_payload_is_not_given_a_position():
    blob = bytearray(pack(make()))
    blob[200] ^= 1
    with pytest.raises(TempocodecError, match="CRC-32 mismatch"):
        payload.with_position(blob, (0, 0))
    with pytest.raises(TempocodecError, match="not a version 2"):
        payload.with_position(_v1(make()), (0, 0))


def test_version_1_payloads_still_decode():
    mask = np.ones((64, 64), bool)
    mask[3, 4] = False
    p = make(mask=mask)
    old = _v1(p)
    assert len(old) == len(pack(p)) - 8 and old[4] == 1
    q = unpack(old, chunk_shape=(64, 64, 1028))
    np.testing.assert_array_equal(q.latent, p.latent)
    np.testing.assert_array_equal(q.mask, mask)
    assert q.position is None and payload.recorded_position(old) is None
    with pytest.raises(TempocodecError, match="CRC-32 mismatch"):
        unpack(old[:40] + bytes([old[40] ^ 4]) + old[41:])


def test_header_must_state_the_arrays_chunk_shape():
    blob = pack(make(channels=16))
    with pytest.raises(TempocodecError, match=r"tile \(64, 64\) of 16 channels, the array's chunks are \(64, 64, 1028\)"):
        unpack(blob, where="c/0/0/0", chunk_shape=(64, 64, 1028))


def _with_mask(p: Payload, kind: MaskKind, blob_mask: bytes) -> bytes:
    """A payload of ``p``'s latent whose mask section is ``blob_mask`` (header and CRC made to fit)."""
    latent = np.ascontiguousarray(p.latent).tobytes()
    fields = list(payload.HEADER.unpack(pack(p)[:HEADER_SIZE]))
    fields[2], fields[11] = int(kind), len(blob_mask)
    head = payload.HEADER.pack(*fields[:-1], 0)[:-4]
    body = latent + blob_mask
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def test_a_mask_declaring_more_than_the_header_implies_is_refused_before_decompressing():
    """A small chunk whose zstd mask expands to 200 MB: refused from its frame header, nothing allocated."""
    bomb = numcodecs.Zstd(level=19).encode(np.zeros(200_000_000, np.uint8))
    blob = _with_mask(make(), MaskKind.ELEMENT, bomb)
    assert len(blob) < 30_000
    tracemalloc.start()
    try:
        with pytest.raises(TempocodecError, match=r"does not decompress to 526336 bytes .* declares 200000000 bytes"):
            unpack(blob, chunk_shape=(64, 64, 1028))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize(("mask_blob", "message"), [
    (b"", "declares no size"),
    (b"\x28\xb5\x2f\xfd\x00", "declares no size"),  # a frame of unknown content size
    (numcodecs.Zstd(level=1).encode(np.zeros(511, np.uint8)), "declares 511 bytes"),
])
def test_a_mask_frame_of_another_or_no_size_is_refused(mask_blob, message):
    with pytest.raises(TempocodecError, match=message):
        unpack(_with_mask(make(), MaskKind.PIXEL, mask_blob), chunk_shape=(64, 64, 1028))


def test_a_mask_frame_of_the_right_size_with_more_frames_behind_it_is_refused():
    frame = numcodecs.Zstd(level=1).encode(np.full(512, 255, np.uint8))
    with pytest.raises(TempocodecError, match="does not decompress"):
        unpack(_with_mask(make(), MaskKind.PIXEL, frame + frame), chunk_shape=(64, 64, 1028))
