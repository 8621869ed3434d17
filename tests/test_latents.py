"""Tests for tempocodec.codec.latents: the latent grid read from stored chunk bytes equals the encoder's means."""

import ast
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from numcodecs.checksum32 import CRC32C
from tiny_model import SMALL_CHANNELS, radiance, reference_latent
from zarr.codecs import BytesCodec, ShardingCodec

from tempocodec.codec import payload
from tempocodec.codec.config import RADIANCE_FILL
from tempocodec.codec.latents import read_latents
from tempocodec.codec.numcodec import make_numcodec
from tempocodec.codec.stored import place_chunks, read_stored_chunks
from tempocodec.codec.zarr3 import make_codec
from tempocodec.errors import TempocodecError
from tempocodec.prepare.normalize import is_valid

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

SHAPE = (131, 200, SMALL_CHANNELS)


def granule():
    """Radiance with a NaN pixel, a block of fill pixels, one bad element and one chunk with nothing valid."""
    x = radiance(SHAPE, seed=2)
    x[10, 20] = np.nan
    x[70:74, 5:9] = RADIANCE_FILL
    x[100, 195, 3] = np.inf
    x[64:128, 128:192] = np.nan
    return x


def write(path, x, zarr_format=3, shards=None, latent_dtype="float16"):
    if zarr_format == 3:
        coding = {"serializer": make_codec("tiny", latent_dtype=latent_dtype), "compressors": None, "shards": shards}
    else:
        coding = {"compressors": [make_numcodec("tiny", latent_dtype=latent_dtype)], "filters": None}
    arr = zarr.create_array(store=path, shape=x.shape, dtype="float32", chunks=(64, 64, x.shape[2]),
                            fill_value=RADIANCE_FILL, zarr_format=zarr_format, **coding)
    arr[:] = x
    return zarr.open_array(path, mode="r")


def expected_latents(model_dir, x, dtype="float16"):
    """Encoder means of every chunk's valid extent laid on the latent grid (NaN where no chunk covers a cell)."""
    rows, cols, channels = x.shape
    grid = np.full((4, -(-rows // 4), -(-cols // 4)), np.nan, np.float32)
    for r in range(0, rows, 64):
        for c in range(0, cols, 64):
            block = np.full((64, 64, channels), np.nan, np.float32)
            part = x[r : r + 64, c : c + 64]
            block[: part.shape[0], : part.shape[1]] = part
            extent = payload.valid_extent(is_valid(block).transpose(2, 0, 1))
            if extent[0]:
                lat = reference_latent(model_dir, block, extent, dtype)
                grid[:, r // 4 : r // 4 + lat.shape[1], c // 4 : c // 4 + lat.shape[2]] = lat
    return grid


@pytest.mark.parametrize(("zarr_format", "shards"), [(3, None), (3, (128, 128, SMALL_CHANNELS)), (2, None)],
                         ids=["v3", "v3-sharded", "v2"])
def test_latents_equal_the_encoder_means(tiny_models, tmp_path, zarr_format, shards):
    x = granule()
    lat = read_latents(write(tmp_path / "a.zarr", x, zarr_format, shards))
    assert lat.dims == ("latent_channel", "latent_row", "latent_col") and lat.shape == (4, 33, 50)
    assert lat.dtype == np.float32
    assert (lat.attrs["model"], lat.attrs["downsample"], lat.attrs["latent_dtype"]) == ("tiny", 4, "float16")
    expected = expected_latents(tiny_models.small, x)
    np.testing.assert_allclose(lat.values, expected, rtol=2e-3, atol=2e-3)
    assert np.isnan(lat.values[:, 16:32, 32:48]).all()
    assert np.isfinite(lat.values[:, :16, :32]).all()


def test_latent_grid_coordinates_and_valid_fraction(tiny_models, tmp_path):
    lat = read_latents(write(tmp_path / "a.zarr", granule()))
    np.testing.assert_array_equal(lat["pixel_row_start"][[0, 1, 32]], [0, 4, 128])
    np.testing.assert_array_equal(lat["pixel_row_stop"][[0, 32]], [4, 131])
    np.testing.assert_array_equal(lat["pixel_col_stop"][[0, 49]], [4, 200])
    fraction = lat["valid_fraction"].values
    assert fraction.shape == (33, 50) and fraction.dtype == np.float32
    assert fraction[2, 5] == pytest.approx(15 / 16)  # pixel (10, 20) NaN in every channel
    assert fraction[17, 1] == pytest.approx(10 / 16)  # fill pixels rows 70-71, cols 5-7
    assert fraction[25, 48] == pytest.approx(1 - 1 / (16 * SMALL_CHANNELS))  # one element (100, 195, 3)
    assert fraction[32, 49] == 1.0  # edge cell: 3 × 4 pixels inside the array, all valid
    assert (fraction[16:32, 32:48] == 0).all()
    assert (fraction[:16, :16][np.arange(16) != 2] == 1).all()


def test_float32_latents_are_stored_exactly(tiny_models, tmp_path):
    x = radiance((64, 70, SMALL_CHANNELS), seed=4)
    lat = read_latents(write(tmp_path / "a.zarr", x, latent_dtype="float32"))
    assert lat.shape == (4, 16, 18) and lat.attrs["latent_dtype"] == "float32"
    np.testing.assert_allclose(lat.values, expected_latents(tiny_models.small, x, "float32"), rtol=1e-5, atol=1e-6)


def test_chunks_never_stored_give_nan_and_zero_fraction(tiny_models, tmp_path):
    x = np.full((64, 128, SMALL_CHANNELS), RADIANCE_FILL, np.float32)
    x[:, :64] = radiance((64, 64, SMALL_CHANNELS))
    lat = read_latents(write(tmp_path / "a.zarr", x, shards=(64, 128, SMALL_CHANNELS)))
    assert np.isnan(lat.values[:, :, 16:]).all() and (lat["valid_fraction"].values[:, 16:] == 0).all()
    assert np.isfinite(lat.values[:, :, :16]).all()


def test_an_array_without_the_vae_codec_is_refused(tmp_path):
    arr = zarr.create_array(store=tmp_path / "plain.zarr", shape=(64, 64, 4), dtype="float32", chunks=(64, 64, 4))
    with pytest.raises(TempocodecError, match="not coded by the tempocodec VAE codec"):
        read_latents(arr)


def test_a_vae_codec_entry_without_a_configuration_is_refused(tiny_models, tmp_path):
    arr = write(tmp_path / "a.zarr", radiance((64, 64, SMALL_CHANNELS)))
    document = tmp_path / "a.zarr" / "zarr.json"
    meta = json.loads(document.read_text())
    meta["codecs"][0]["configuration"] = None
    document.write_text(json.dumps(meta))
    with pytest.raises(TempocodecError, match=r"bad tempocodec\.vae codec configuration \(None\)$"):
        read_latents(arr)


def _layout_array(path, layout):
    """An empty array of ``granule()``'s shape in one of the other layouts the specifications allow."""
    shape, chunks = SHAPE, (64, 64, SMALL_CHANNELS)
    if layout == "v2-nested":
        return zarr.create_array(store=path, shape=shape, dtype="float32", chunks=chunks, fill_value=RADIANCE_FILL,
                                 compressors=[make_numcodec("tiny")], filters=None, zarr_format=2,
                                 chunk_key_encoding={"name": "v2", "separator": "/"})
    if layout == "v3-v2-keys":
        return zarr.create_array(store=path, shape=shape, dtype="float32", chunks=chunks, fill_value=RADIANCE_FILL,
                                 serializer=make_codec("tiny"), compressors=None,
                                 chunk_key_encoding={"name": "v2", "separator": "."})
    sharding = ShardingCodec(chunk_shape=chunks, codecs=[make_codec("tiny")], index_codecs=[BytesCodec(endian="big")],
                             index_location="start")
    return zarr.create_array(store=path, shape=shape, dtype="float32", chunks=(128, 64, SMALL_CHANNELS),
                             fill_value=RADIANCE_FILL, serializer=sharding, compressors=None)


@pytest.mark.parametrize("layout", ["v2-nested", "v3-v2-keys", "v3-index-at-start-big-endian-no-crc"])
def test_latents_through_other_chunk_keys_and_shard_indexes(tiny_models, tmp_path, layout):
    x = granule()
    _layout_array(tmp_path / "a.zarr", layout)[:] = x
    lat = read_latents(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    np.testing.assert_allclose(lat.values, expected_latents(tiny_models.small, x), rtol=2e-3, atol=2e-3)


def test_latents_of_an_array_in_a_group_of_a_memory_store_inside_a_running_event_loop(tiny_models):
    x = radiance((64, 128, SMALL_CHANNELS), seed=5)
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w").create_group("band")
    arr = group.create_array("radiance", shape=x.shape, dtype="float32", chunks=(64, 64, SMALL_CHANNELS),
                             shards=(64, 128, SMALL_CHANNELS), serializer=make_codec("tiny"), compressors=None,
                             fill_value=RADIANCE_FILL)
    arr[:] = x

    async def inside_a_loop():
        return read_latents(arr)

    lat = asyncio.run(inside_a_loop())
    np.testing.assert_allclose(lat.values, expected_latents(tiny_models.small, x), rtol=2e-3, atol=2e-3)


def _with_index_crc(shard: bytes) -> bytes:
    """``shard`` with the CRC-32C of its 64-byte end index recomputed (to reach the checks behind it)."""
    return shard[:-4] + bytes(CRC32C().encode(shard[-68:-4])[-4:])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b[:10], "shorter than its 68-byte index"),
    (lambda b: b[:-68] + (2**40).to_bytes(8, "little") + b[-60:], r"shard index is corrupt \(CRC-32C mismatch\)"),
    (lambda b: _with_index_crc(b[:-68] + (2**40).to_bytes(8, "little") + b[-60:]), "points past the end of the shard"),
])
def test_damaged_shard_index_is_a_clear_error(tiny_models, tmp_path, damage, message):
    write(tmp_path / "a.zarr", granule(), shards=(128, 128, SMALL_CHANNELS))
    shard = tmp_path / "a.zarr" / "c" / "0" / "0" / "0"
    shard.write_bytes(damage(shard.read_bytes()))
    with pytest.raises(TempocodecError, match=rf"a.zarr shard \(0, 0\): .*{message}"):
        read_latents(zarr.open_array(tmp_path / "a.zarr", mode="r"))


def _swap(a: Path, b: Path) -> None:
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


@pytest.mark.parametrize(("zarr_format", "shards", "first", "second", "message"), [
    (2, None, "0.0.0", "1.2.0", r"chunk \(0, 0\): holds the payload of chunk \(1, 2\)"),
    (3, (64, 128, SMALL_CHANNELS), "c/0/0/0", "c/1/1/0", r"chunk \(0, 0\): holds the payload of chunk \(1, 2\)"),
], ids=["v2-chunks", "v3-shards"])
def test_swapped_chunks_are_refused_once_their_positions_are_recorded(tiny_models, tmp_path, zarr_format, shards,
                                                                      first, second, message):
    x = granule()
    write(tmp_path / "a.zarr", x, zarr_format, shards)
    before = read_latents(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    _swap(tmp_path / "a.zarr" / first, tmp_path / "a.zarr" / second)
    swapped = read_latents(zarr.open_array(tmp_path / "a.zarr", mode="r"))  # no positions: silently wrong
    assert not np.array_equal(swapped.values, before.values, equal_nan=True)
    _swap(tmp_path / "a.zarr" / first, tmp_path / "a.zarr" / second)
    place_chunks(zarr.open_array(tmp_path / "a.zarr", mode="r+"))
    np.testing.assert_array_equal(read_latents(zarr.open_array(tmp_path / "a.zarr", mode="r")).values, before.values)
    _swap(tmp_path / "a.zarr" / first, tmp_path / "a.zarr" / second)
    with pytest.raises(TempocodecError, match=message):
        read_latents(zarr.open_array(tmp_path / "a.zarr", mode="r"))


def test_recorded_positions_leave_payload_lengths_and_decoding_unchanged(tiny_models, tmp_path):
    x = granule()
    arr = write(tmp_path / "a.zarr", x, 3, (64, 128, SMALL_CHANNELS))
    decoded = arr[:]
    files = sorted(p for p in (tmp_path / "a.zarr" / "c").rglob("*") if p.is_file())
    sizes = [p.stat().st_size for p in files]
    place_chunks(zarr.open_array(tmp_path / "a.zarr", mode="r+"))
    assert [p.stat().st_size for p in files] == sizes
    placed = zarr.open_array(tmp_path / "a.zarr", mode="r")
    np.testing.assert_array_equal(placed[:], decoded)
    _, chunks = read_stored_chunks(placed)
    assert len(chunks) == 3 * 4
    assert all(payload.recorded_position(chunk) == at for at, chunk in chunks.items())


def _runtime_imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import outside ``if TYPE_CHECKING:`` blocks."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found += [(alias.name, []) for alias in sub.names]
            elif isinstance(sub, ast.ImportFrom):
                found.append((sub.module or "", [alias.name for alias in sub.names]))
    return found


def test_codec_modules_use_public_zarr_apis_only():
    codec_dir = Path(__file__).resolve().parents[1] / "tempocodec" / "codec"
    for path in sorted(codec_dir.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for module, names in _runtime_imports(ast.parse(text)):
            if module.split(".")[0] != "zarr":
                continue
            parts = module.split(".")
            assert "core" not in parts and not any(p.startswith("_") for p in parts), f"{path.name}: {module}"
            assert not any(n.startswith("_") for n in names), f"{path.name}: {module} {names}"
        assert "_load_full_shard_maybe" not in text, path.name
