"""Golden codec cases (tests/fixture/codec): the bytes the codec writes and what committed payloads decode to.

In the manner of numcodecs' ``check_backwards_compatibility``: committed inputs, configs, payloads and decoded
arrays; re-encoding must give the committed payloads, and the committed payloads must decode to the committed arrays
and latents. A change of any of them is a format change: regenerate with ``make_fixtures.py codec --regenerate``
and say so in the commit (tests/fixture/README.md).

Float tolerance: ONNX Runtime results differ in the last bits between its graph optimizations (fused or not; so
between ORT versions) and numpy's float32 log/exp between SIMD paths (so between CPUs). Hence every byte that is
not a float result (header, extent, mask, sizes) must be identical, while latent values may differ by one float16
ulp (float32: 1e-5) and decoded radiance by a relative 1e-5 (the ORT differences seen are ~3e-6 in normalized
units, ~1e-6 relative radiance). Latents read from committed payloads involve no float math: exact.
"""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest
from golden import GOLDEN, GoldenConfig, configs, decode, encode, inputs, read_chunks
from zarr.registry import get_codec_class

from tempocodec.codec import VAECodec, VAENumcodec, payload
from tempocodec.codec.latents import read_latents

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models: the committed model "tiny" by name

CONFIGS = configs()
INPUTS = inputs()
CASES = [pytest.param(c, i, id=f"{c.name}-{i.stem}") for c in CONFIGS for i in INPUTS]
DECODED_RTOL = 1e-5
F32_LATENT_TOL = 1e-5


def test_the_fixture_has_both_faces_and_every_kind_of_payload():
    assert {c.zarr_format for c in CONFIGS} == {2, 3} and len(INPUTS) >= 3
    found = [payload.unpack(data) for c in CONFIGS for i in INPUTS for data in read_chunks(GOLDEN / c.name / i.stem).values()]
    assert {p.mask_kind for p in found} == set(payload.MaskKind)
    assert {p.latent.dtype.name for p in found} == {"float16", "float32"}
    assert any(p.extent == (0, 0) for p in found) and any(0 < p.extent[0] < p.tile[0] for p in found)


def _case(config: GoldenConfig, name: str):
    """The committed payloads, decoded array and latents of one case; fail clearly when it was never written."""
    case = GOLDEN / config.name / name
    if not (case / "decoded.npy").is_file():
        pytest.fail(f"{case} is missing: run python tests/fixture/make_fixtures.py codec")
    return read_chunks(case), np.load(case / "decoded.npy"), np.load(case / "latents.npz")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_configs_are_what_the_codecs_write(config):
    """A codec built from the committed JSON writes the same JSON back (the metadata format is unchanged)."""
    codec = config.make_codec()
    if config.zarr_format == 3:
        assert isinstance(codec, VAECodec) and get_codec_class("tempocodec.vae") is VAECodec
        assert codec.to_dict() == config.codec
    else:
        assert isinstance(codec, VAENumcodec) and isinstance(numcodecs.get_codec(config.codec), VAENumcodec)
        assert codec.get_config() == config.codec


def assert_latents_close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float rounding: one float16 ulp, or 1e-5 for float32 latents."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == np.float16:
        ulp = np.abs(np.spacing(want)).astype(np.float32)
        np.testing.assert_array_less(np.abs(got.astype(np.float32) - want.astype(np.float32)), ulp * 1.001)
    else:
        np.testing.assert_allclose(got, want, rtol=F32_LATENT_TOL, atol=F32_LATENT_TOL)


def assert_same_payload(got: bytes, want: bytes) -> None:
    """``got`` is ``want`` byte for byte, but for latent values within float rounding (and so the CRC)."""
    crc_at = payload.HEADER_SIZE - 4
    g, w = payload.unpack(got), payload.unpack(want)
    mask_at = payload.HEADER_SIZE + w.latent.nbytes
    assert got[:crc_at] == want[:crc_at], "chunk header differs"
    assert got[mask_at:] == want[mask_at:], "validity mask bytes differ"
    assert_latents_close(g.latent, w.latent)


@pytest.mark.parametrize(("config", "source"), CASES)
def test_encoding_the_inputs_gives_the_committed_payloads(tiny_models, tmp_path, config, source):
    chunks, _, _ = _case(config, source.stem)
    got = encode(config, np.load(source), tmp_path / "a.zarr")
    assert sorted(got) == sorted(chunks)
    for key, want in chunks.items():
        assert payload.pack(payload.unpack(want)) == want, f"chunk {key}: the byte layout writer changed"
        assert_same_payload(got[key], want)


@pytest.mark.parametrize(("config", "source"), CASES)
def test_committed_payloads_decode_to_the_committed_arrays(tiny_models, tmp_path, config, source):
    chunks, decoded, _ = _case(config, source.stem)
    got = decode(config, decoded.shape, chunks, tmp_path / "a.zarr")[:]
    assert got.dtype == np.float32 and got.shape == decoded.shape == np.load(source).shape
    fill = decoded == np.float32(config.decoded_fill)
    np.testing.assert_array_equal(got == np.float32(config.decoded_fill), fill)
    assert fill.any() and np.isfinite(decoded[~fill]).all()
    np.testing.assert_allclose(got[~fill], decoded[~fill], rtol=DECODED_RTOL, atol=0)


@pytest.mark.parametrize(("config", "source"), CASES)
def test_latents_of_the_committed_payloads_are_the_committed_latents(tiny_models, tmp_path, config, source):
    chunks, decoded, latents = _case(config, source.stem)
    got = read_latents(decode(config, decoded.shape, chunks, tmp_path / "a.zarr"))
    np.testing.assert_array_equal(got.values, latents["latent"])
    np.testing.assert_array_equal(got["valid_fraction"].values, latents["valid_fraction"])
    assert np.isfinite(latents["latent"]).any()
