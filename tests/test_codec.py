"""Tests for tempocodec.codec (config, kernel, zarr3, numcodec): both codec faces, Zarr v3 (plain, sharded) and v2
stores, xarray, dask, failures."""

import array
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.registry
from numcodecs.tests.common import check_config
from tiny_model import SMALL_CHANNELS, radiance, reference_roundtrip

import tempocodec.codec.kernel as kernel_module
from tempocodec.codec import payload
from tempocodec.codec.config import RADIANCE_FILL
from tempocodec.codec.numcodec import VAENumcodec, make_numcodec
from tempocodec.codec.zarr3 import VAECodec, make_codec
from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import is_valid
from tempocodec.runtime.artifacts import MODELS_ENV, load_model

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

SHAPE = (131, 200, SMALL_CHANNELS)
RTOL = 2e-3


def granule(shape=SHAPE, fill=RADIANCE_FILL):
    """Radiance with a NaN pixel, a block of fill pixels, one bad element and one chunk with nothing valid."""
    x = radiance(shape, seed=1)
    x[10, 20] = np.nan
    x[70:74, 5:9] = fill
    x[100, 195, 3] = np.inf
    x[64:128, 128:192] = np.nan
    return x


def invalid(original, fill):
    """The codec's rule without a valid range: not finite, not positive, ``>= 1e30``, or the fill value."""
    return ~is_valid(original) | (original <= 0) | (original == np.float32(fill))


def assert_decoded(model_dir, original, decoded, fill, tile=64):
    """Invalid elements come back as exactly ``fill``; valid ones as the direct ONNX round trip of their chunk."""
    bad = invalid(original, fill)
    got_fill = np.isnan(decoded) if np.isnan(fill) else decoded == np.float32(fill)
    np.testing.assert_array_equal(got_fill, bad)
    rows, cols, channels = original.shape
    for r in range(0, rows, tile):
        for c in range(0, cols, tile):
            block = np.full((tile, tile, channels), np.nan, np.float32)
            part = original[r : r + tile, c : c + tile]
            block[: part.shape[0], : part.shape[1]] = np.where(bad[r : r + tile, c : c + tile], np.nan, part)
            extent = payload.valid_extent(is_valid(block).transpose(2, 0, 1))
            if extent[0] == 0:
                continue
            ref = reference_roundtrip(model_dir, block, extent)
            h, w = min(extent[0], part.shape[0]), min(extent[1], part.shape[1])
            ok = ~bad[r : r + h, c : c + w]
            np.testing.assert_allclose(decoded[r : r + h, c : c + w][ok], ref[:h, :w][ok], rtol=RTOL)


# --------------------------------------------------------------------------------------------------- numcodecs face


def test_numcodec_config_round_trips_through_json_and_the_registry(tiny_models):
    codec = make_numcodec("tiny")
    check_config(codec)
    config = json.loads(json.dumps(codec.get_config()))
    assert config["id"] == "tempocodec_vae" and isinstance(numcodecs.get_codec(config), VAENumcodec)
    art = load_model(tiny_models.small)
    assert (config["model"], config["model_sha256"], config["latent_dtype"], config["tile"]) == (
        "tiny", art.sha256, "float16", [64, 64])
    np.testing.assert_array_equal(np.float32(config["mu"]), art.mu)
    np.testing.assert_array_equal(np.float32(config["sigma"]), art.sigma)
    assert np.float32(config["fill_value"]) == np.float32(-9.96921e36)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_codec_repr_is_short_in_info_and_xarray_encoding(tiny_models, tmp_path, zarr_format):
    sha = load_model(tiny_models.full).sha256
    codec = make_codec("tiny1028") if zarr_format == 3 else make_numcodec("tiny1028", latent_dtype="float32")
    fill = "" if zarr_format == 3 else ", fill_value=-9.96921e+36"
    dtype = "float16" if zarr_format == 3 else "float32"
    assert repr(codec) == (f"{type(codec).__name__}(model='tiny1028', sha256='{sha[:8]}…', tile=(64, 64), "
                           f"latent_dtype='{dtype}'{fill})")
    coding = {"serializer": codec, "compressors": None} if zarr_format == 3 else {"compressors": [codec], "filters": None}
    ds = xr.Dataset({"radiance": (("mirror_step", "xtrack", "spectral_channel"), radiance((64, 64, 1028)))})
    ds.to_zarr(tmp_path / "r.zarr", encoding={"radiance": {"chunks": (64, 64, 1028), **coding}},
               zarr_format=zarr_format, consolidated=False)
    opened = xr.open_zarr(tmp_path / "r.zarr", consolidated=False)
    for text in (str(opened.radiance.encoding), str(zarr.open_array(tmp_path / "r.zarr" / "radiance").info)):
        assert repr(codec) in text and len(text) < 1500, text


def test_numcodec_encodes_any_buffer_and_decodes_into_any_buffer(tiny_models):
    codec = make_numcodec("tiny")
    x = radiance((64, 64, SMALL_CHANNELS))
    expected = reference_roundtrip(tiny_models.small, x, (64, 64))
    inputs = [x, x.tobytes(), bytearray(x.tobytes()), array.array("b", x.tobytes())]
    encoded = [codec.encode(buf) for buf in inputs]
    assert all(enc == encoded[0] for enc in encoded)
    enc = encoded[0]
    for buf in (enc, bytearray(enc), array.array("b", enc), np.frombuffer(enc, "u1")):
        dec = codec.decode(buf)
        assert dec.dtype == np.float32 and dec.shape == x.shape
        np.testing.assert_allclose(dec, expected, rtol=RTOL)
    out = np.empty_like(x)
    codec.decode(enc, out=out)
    np.testing.assert_allclose(out, expected, rtol=RTOL)
    raw = bytearray(x.nbytes)
    codec.decode(enc, out=raw)
    np.testing.assert_allclose(np.frombuffer(raw, np.float32).reshape(x.shape), expected, rtol=RTOL)


def test_numcodec_refuses_wrong_dtype_and_size(tiny_models):
    codec = make_numcodec("tiny")
    x = radiance((64, 64, SMALL_CHANNELS))
    with pytest.raises(TempocodecError, match=r"tempocodec_vae: chunk must be float32 \(64, 64, 16\)"):
        codec.encode(x.astype(np.float64))
    with pytest.raises(TempocodecError, match="chunk must be float32"):
        codec.encode(x[:, :, :15].copy())


def test_numcodec_needs_a_fill_value(tiny_models):
    config = {k: v for k, v in make_numcodec("tiny").get_config().items() if k != "id"}
    with pytest.raises(TempocodecError, match=r"^tempocodec_vae: 'fill_value' must be a number, got None$"):
        VAENumcodec(**{**config, "fill_value": None})


# --------------------------------------------------------------------------------------------------- v3 face


def test_v3_codec_dict_round_trip_and_entry_point(tiny_models):
    codec = make_codec("tiny")
    data = json.loads(json.dumps(codec.to_dict()))
    assert data["name"] == "tempocodec.vae" and "fill_value" not in data["configuration"]
    again = VAECodec.from_dict(data)
    assert again == codec and hash(again) == hash(codec)
    assert zarr.registry.get_codec_class("tempocodec.vae") is VAECodec
    assert make_codec(load_model(tiny_models.small), fill_value=0.0).config.fill_value == 0.0
    with pytest.raises(TempocodecError, match="latent_dtype"):
        make_codec("tiny", latent_dtype="int8")


def test_valid_range_is_optional_in_the_configuration_and_checked(tiny_models):
    plain = make_codec("tiny").to_dict()["configuration"]
    assert not {"fill_value", "valid_min", "valid_max"} & set(plain)  # stores written before these keys decode alike
    assert (VAECodec(**plain).config.valid_min, VAECodec(**plain).config.valid_max) == (None, None)
    ranged = make_codec("tiny", fill_value=-1e30, valid_min=1, valid_max=1e14)
    data = json.loads(json.dumps(ranged.to_dict()))
    assert (data["configuration"]["valid_min"], data["configuration"]["valid_max"]) == (1.0, 1e14)
    assert VAECodec.from_dict(data) == ranged
    assert numcodecs.get_codec(make_numcodec("tiny", valid_max=5e13).get_config()).config.valid_max == 5e13
    with pytest.raises(TempocodecError, match="'valid_min' 2.0 is above 'valid_max' 1.0"):
        make_codec("tiny", valid_min=2, valid_max=1)
    with pytest.raises(TempocodecError, match="'valid_max' must be a finite float32 number"):
        make_numcodec("tiny", valid_max=1e39)


@pytest.mark.parametrize("factory", [make_codec, make_numcodec])
def test_codecs_pickle_small_and_equal(tiny_models, factory):
    codec = factory("tiny1028")
    blob = pickle.dumps(codec)
    assert pickle.loads(blob) == codec
    assert len(blob) < 40_000


def v3_array(path, model="tiny", shape=SHAPE, shards=None, fill=RADIANCE_FILL, codec_fill=None, dtype="float32", chunks=None,
             **valid_range):
    codec = make_codec(model, fill_value=codec_fill, **valid_range)
    return zarr.create_array(
        store=path, shape=shape, dtype=dtype, chunks=chunks or (64, 64, shape[2]), shards=shards,
        serializer=codec, compressors=None, fill_value=fill,
    )


@pytest.mark.parametrize(("shards", "fill"), [(None, RADIANCE_FILL), ((128, 128, SMALL_CHANNELS), RADIANCE_FILL), (None, 0.0)],
                         ids=["plain", "sharded", "zero-fill"])
def test_v3_store_round_trip_with_edge_chunks(tiny_models, tmp_path, shards, fill):
    x = granule(fill=fill)
    arr = v3_array(tmp_path / "a.zarr", shards=shards, fill=fill)
    arr[:] = x
    decoded = zarr.open_array(tmp_path / "a.zarr", mode="r")[:]
    assert decoded.dtype == np.float32 and decoded.shape == SHAPE
    assert_decoded(tiny_models.small, x, decoded, fill)


def test_v3_nan_fill_array_decodes_invalid_to_nan_unless_the_codec_names_a_fill(tiny_models, tmp_path):
    x = granule(fill=np.nan)
    v3_array(tmp_path / "nan.zarr", fill=np.nan)[:] = x
    assert_decoded(tiny_models.small, x, zarr.open_array(tmp_path / "nan.zarr")[:], np.nan)
    v3_array(tmp_path / "own.zarr", fill=np.nan, codec_fill=-7.0)[:] = x
    decoded = zarr.open_array(tmp_path / "own.zarr")[:]
    unstored = (slice(64, 128), slice(128, 192))  # all NaN = the array's fill: zarr never stores that chunk
    assert np.isnan(decoded[unstored]).all()
    decoded[unstored] = -7.0
    np.testing.assert_array_equal(decoded == np.float32(-7.0), invalid(x, np.nan))


def spoiled(fill):
    """Radiance with a NaN pixel, a block of ``fill`` pixels, an infinite, a negative pixel and zero elements."""
    x = radiance(SHAPE, seed=1)
    x[10, 20] = np.nan
    x[70:74, 5:9] = fill
    x[100, 195, 3] = np.inf
    x[3, 3] = -5.0
    x[5, 70, :4] = 0.0
    x[40, 150, 2] = -1e-3
    return x


def write_and_read(path, x, face, fill, **valid_range):
    """``x`` through one codec face that names ``fill``, read back raw. The v3 array's own fill value is NaN, as when
    xarray writes it (it keeps ``_FillValue`` as an attribute); the v2 array's is ``fill``."""
    if face == "v3":
        arr = v3_array(path, fill=np.nan, codec_fill=fill, **valid_range)
    else:
        arr = zarr.create_array(store=path, shape=x.shape, dtype="float32", chunks=(64, 64, x.shape[2]), zarr_format=2,
                                compressors=[make_numcodec("tiny", fill_value=fill, **valid_range)], filters=None,
                                fill_value=fill)
    arr[:] = x
    return zarr.open_array(path, mode="r")[:]


@pytest.mark.parametrize("face", ["v3", "v2"])
@pytest.mark.parametrize("fill", [-1e30, 0.0, RADIANCE_FILL, 1.0], ids=["-1e30", "zero", "tempo", "one"])
def test_source_fill_and_non_positive_radiance_are_invalid_and_never_reach_the_encoder(tiny_models, tmp_path, face, fill):
    x = spoiled(fill)
    bad = ~np.isfinite(x) | (x <= 0) | (np.abs(x) >= 1e30) | (x == np.float32(fill))
    decoded = write_and_read(tmp_path / "a.zarr", x, face, fill)
    np.testing.assert_array_equal(decoded == np.float32(fill), bad)
    # valid elements decode exactly as when every invalid one was NaN: nothing of the fill reached the encoder
    clean = write_and_read(tmp_path / "clean.zarr", np.where(bad, np.float32(np.nan), x), face, RADIANCE_FILL)
    np.testing.assert_array_equal(decoded[~bad], clean[~bad])


@pytest.mark.parametrize("face", ["v3", "v2"])
def test_elements_outside_the_valid_range_are_invalid_and_decoded_values_lie_inside_it(tiny_models, tmp_path, face):
    x = radiance(SHAPE, seed=1)
    lo, hi = (float(np.float32(q)) for q in np.quantile(x, [0.1, 0.9]))
    bad = (x < np.float32(lo)) | (x > np.float32(hi))
    decoded = write_and_read(tmp_path / "a.zarr", x, face, RADIANCE_FILL, valid_min=lo, valid_max=hi)
    np.testing.assert_array_equal(decoded == np.float32(RADIANCE_FILL), bad)
    clean = write_and_read(tmp_path / "clean.zarr", np.where(bad, np.float32(np.nan), x), face, RADIANCE_FILL)
    np.testing.assert_array_equal(decoded[~bad], np.clip(clean[~bad], np.float32(lo), np.float32(hi)))


def test_v2_store_round_trip_with_edge_chunks(tiny_models, tmp_path):
    x = granule()
    arr = zarr.create_array(
        store=tmp_path / "v2.zarr", shape=SHAPE, dtype="float32", chunks=(64, 64, SMALL_CHANNELS),
        compressors=[make_numcodec("tiny")], filters=None, fill_value=RADIANCE_FILL, zarr_format=2,
    )
    arr[:] = x
    meta = json.loads((tmp_path / "v2.zarr" / ".zarray").read_text())
    assert meta["compressor"]["id"] == "tempocodec_vae"
    assert_decoded(tiny_models.small, x, zarr.open_array(tmp_path / "v2.zarr", mode="r")[:], RADIANCE_FILL)


def test_edge_chunk_stores_only_the_latents_covering_valid_pixels(tiny_models, tmp_path):
    x = granule()
    v3_array(tmp_path / "a.zarr")[:] = x
    edge = payload.unpack((tmp_path / "a.zarr" / "c" / "2" / "3" / "0").read_bytes())
    assert (edge.extent, edge.latent.shape, edge.mask) == ((3, 8), (4, 1, 2), None)
    empty = payload.unpack((tmp_path / "a.zarr" / "c" / "1" / "2" / "0").read_bytes())
    assert empty.extent == (0, 0) and empty.latent.size == 0
    pixel = payload.unpack((tmp_path / "a.zarr" / "c" / "0" / "0" / "0").read_bytes())
    assert pixel.mask_kind is payload.MaskKind.PIXEL and not pixel.mask[10, 20] and pixel.mask.sum() == 64 * 64 - 1
    element = payload.unpack((tmp_path / "a.zarr" / "c" / "1" / "3" / "0").read_bytes())
    assert element.mask_kind is payload.MaskKind.ELEMENT and element.extent == (64, 8)


def test_minibatch_goes_through_the_model_in_one_call(tiny_models, tmp_path, monkeypatch):
    calls = []
    run = kernel_module._run

    def counting(art, which, inputs, name, output):
        calls.append((which, len(inputs)))
        return run(art, which, inputs, name, output)

    monkeypatch.setattr(kernel_module, "_run", counting)
    x = radiance((128, 192, SMALL_CHANNELS))
    with zarr.config.set({"codec_pipeline.batch_size": 6}):
        v3_array(tmp_path / "b.zarr", shape=x.shape)[:] = x
        decoded = zarr.open_array(tmp_path / "b.zarr")[:]
    assert calls == [("encoder", 6), ("decoder", 6)]
    assert_decoded(tiny_models.small, x, decoded, RADIANCE_FILL)


def test_validate_refuses_wrong_dtype_channels_and_chunks(tiny_models, tmp_path):
    with pytest.raises(TempocodecError, match="array dtype is float64, the codec takes float32"):
        v3_array(tmp_path / "a.zarr", dtype="float64")
    with pytest.raises(TempocodecError, match=r"does not fit model 'tiny'.*\(64, 64, 16\)"):
        zarr.create_array(store=tmp_path / "b.zarr", shape=(64, 64, 15), dtype="float32", chunks=(64, 64, 15),
                          serializer=make_codec("tiny"), compressors=None)
    with pytest.raises(TempocodecError, match="does not fit model"):
        v3_array(tmp_path / "c.zarr", chunks=(32, 64, SMALL_CHANNELS))


def test_sharded_inner_chunk_of_the_wrong_shape_is_refused_on_write(tiny_models, tmp_path):
    codec = VAECodec(**{**make_codec("tiny").to_dict()["configuration"], "tile": [32, 32]})
    arr = zarr.create_array(store=tmp_path / "s.zarr", shape=(64, 64, SMALL_CHANNELS), dtype="float32",
                            chunks=(64, 64, SMALL_CHANNELS), shards=(64, 64, SMALL_CHANNELS), serializer=codec,
                            compressors=None)
    with pytest.raises(TempocodecError, match=r"must be float32 \(32, 32, 16\)"):
        arr[:] = radiance((64, 64, SMALL_CHANNELS))


# --------------------------------------------------------------------------------------------------- failures


def _edit_codec_config(path: Path, **changes):
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"][0]["configuration"].update(changes)
    meta_path.write_text(json.dumps(meta))


def test_store_naming_another_model_version_is_a_clear_error(tiny_models, tmp_path):
    v3_array(tmp_path / "a.zarr")[:] = granule()
    wanted = "ab" * 32
    _edit_codec_config(tmp_path / "a.zarr", model_sha256=wanted)
    arr = zarr.open_array(tmp_path / "a.zarr")
    wrong_model = rf"model 'tiny' has sha256 \w+, but this array needs model 'tiny' \(sha256 {wanted}\)"
    with pytest.raises(TempocodecError, match=wrong_model):
        arr[:64, :64]


def test_a_model_loaded_from_any_path_serves_codecs_that_name_it(tiny_models, tmp_path):
    other = load_model(tiny_models.other)  # named "tiny" like the model on TEMPOCODEC_MODELS, other statistics
    codec = make_numcodec(other)
    x = radiance((64, 64, SMALL_CHANNELS))
    np.testing.assert_allclose(codec.decode(codec.encode(x)), reference_roundtrip(tiny_models.other, x, (64, 64)), rtol=RTOL)


def test_store_naming_a_missing_model_is_a_clear_error(tiny_models, tmp_path):
    v3_array(tmp_path / "a.zarr")[:] = granule()
    _edit_codec_config(tmp_path / "a.zarr", model="tiny-2099")
    with pytest.raises(TempocodecError, match=r"'tiny-2099': no model directory.*this array needs model 'tiny-2099'"):
        zarr.open_array(tmp_path / "a.zarr")[:64, :64]


def test_store_with_other_statistics_is_a_clear_error(tiny_models, tmp_path):
    v3_array(tmp_path / "a.zarr")[:] = granule()
    mu = load_model(tiny_models.small).mu + 1
    _edit_codec_config(tmp_path / "a.zarr", mu=[float(v) for v in mu])
    with pytest.raises(TempocodecError, match="normalization differs from the array's codec configuration"):
        zarr.open_array(tmp_path / "a.zarr")[:64, :64]


@pytest.mark.parametrize(
    ("damage", "message"),
    [(lambda b: b[:-7], "truncated"), (lambda b: b[:50] + bytes([b[50] ^ 4]) + b[51:], "corrupt")],
)
def test_corrupt_chunk_is_a_clear_error(tiny_models, tmp_path, damage, message):
    v3_array(tmp_path / "a.zarr")[:] = granule()
    chunk = tmp_path / "a.zarr" / "c" / "0" / "1" / "0"
    chunk.write_bytes(damage(chunk.read_bytes()))
    arr = zarr.open_array(tmp_path / "a.zarr")
    assert np.count_nonzero(arr[:64, :64] > 0) == (64 * 64 - 1) * SMALL_CHANNELS  # an undamaged chunk still reads
    with pytest.raises(TempocodecError, match=rf"chunk of model 'tiny': tempocodec chunk .*{message}"):
        arr[:64, 64:128]


# --------------------------------------------------------------------------------------------------- 1028 channels


def test_ratio_on_full_tiles_and_on_a_131_by_200_granule(tiny_models, tmp_path):
    codec = make_numcodec("tiny1028")
    full = radiance((64, 64, 1028))
    assert full.nbytes / len(codec.encode(full)) >= 1000
    x = radiance((131, 200, 1028), seed=3)
    v3_array(tmp_path / "g.zarr", model="tiny1028", shape=x.shape)[:] = x
    stored = sum(p.stat().st_size for p in (tmp_path / "g.zarr" / "c").rglob("*") if p.is_file())
    assert x.nbytes / stored >= 900
    corner = zarr.open_array(tmp_path / "g.zarr")[128:, 192:]
    assert corner.shape == (3, 8, 1028)
    block = np.full((64, 64, 1028), RADIANCE_FILL, np.float32)
    block[:3, :8] = x[128:, 192:]
    np.testing.assert_allclose(corner, reference_roundtrip(tiny_models.full, block, (3, 8)), rtol=RTOL)


# --------------------------------------------------------------------------------------------------- xarray, dask


def _xarray_store(path: Path, zarr_format: int) -> xr.Dataset:
    """Write ``granule()`` through xarray (v3 sharded or v2) and return the dataset written."""
    ds = xr.Dataset({"radiance": (("mirror_step", "xtrack", "spectral_channel"), granule())})
    enc = {"chunks": (64, 64, SMALL_CHANNELS), "_FillValue": RADIANCE_FILL, "filters": None}
    if zarr_format == 3:
        enc |= {"serializer": make_codec("tiny"), "compressors": None, "shards": (64, 128, SMALL_CHANNELS)}
    else:
        enc |= {"compressors": [make_numcodec("tiny")]}
    ds.to_zarr(path, encoding={"radiance": enc}, zarr_format=zarr_format, consolidated=False, mode="w")
    return ds


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_fresh_process_opens_the_store_through_entry_points_only(tiny_models, tmp_path, zarr_format):
    _xarray_store(tmp_path / "x.zarr", zarr_format)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import xarray as xr
        assert not any(m.startswith("tempocodec") for m in sys.modules)
        ds = xr.open_zarr({str(tmp_path / "x.zarr")!r}, consolidated=False)
        np.save({str(tmp_path / "out.npy")!r}, ds["radiance"].values)
        print("tempocodec.codec.kernel" in sys.modules)
    """)
    env = {"PATH": "/usr/bin:/bin", MODELS_ENV: str(tiny_models.root), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    expected = zarr.open_array(tmp_path / "x.zarr" / "radiance")[:]
    got = np.load(tmp_path / "out.npy")
    bad = invalid(granule(), RADIANCE_FILL)
    assert np.isnan(got[bad]).all()
    np.testing.assert_allclose(got[~bad], expected[~bad], rtol=1e-6)


def test_dask_threads_and_pickled_arrays_decode_the_same(tiny_models, tmp_path):
    _xarray_store(tmp_path / "x.zarr", 3)
    arr = zarr.open_array(tmp_path / "x.zarr" / "radiance")
    expected = arr[:]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(arr))[:], expected)
    ds = xr.open_zarr(tmp_path / "x.zarr", consolidated=False, mask_and_scale=False)
    got = ds["radiance"].chunk({"mirror_step": 64, "xtrack": 64}).compute(scheduler="threads", num_workers=4)
    np.testing.assert_array_equal(got.values, expected)
