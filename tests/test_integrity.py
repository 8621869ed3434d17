"""Tests for a store's integrity: the record of every object written, checksums on every array, payload positions,
what each reader refuses (info, decompress, query, open_store), and ``tempocodec verify``."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from helpers_cli import assert_one_line_error, run_cli
from tiny_model import FIXTURE

from tempocodec.codec import payload
from tempocodec.codec.noise_codec import HEADER
from tempocodec.codec.stored import read_stored_chunks
from tempocodec.errors import TempocodecError
from tempocodec.runtime import integrity
from tempocodec.runtime.query import query_store
from tempocodec.runtime.store import compress_granule, open_store, store_info
from tempocodec.runtime.verify import verify_store
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
MODEL = "tiny1028"
RADIANCE_OBJECTS = {3: ("c/0/0/0", "c/1/0/0"), 2: ("0.0.0", "0.1.0", "1.0.0", "1.1.0")}
"""The radiance objects of a 70×70 granule: two 64×512 shards (v3), four 64×64 chunks (v2)."""


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    """A 70×70 simulated UV granule: 2×2 chunks, the last row and column of chunks at the edge."""
    return write_simulated(tmp_path_factory.mktemp("granule"), 70, 70, seed=11, bands="uv")[0]


@pytest.fixture(scope="module")
def stores(granule, tiny_models, tmp_path_factory) -> dict[int, Path]:
    """The granule in each format, radiance_error exact (coded from the latents, so that its chunks are checked too)."""
    out = tmp_path_factory.mktemp("stores")
    return {fmt: compress_granule(granule, out / f"v{fmt}.zarr", model=MODEL, zarr_format=fmt, radiance_error="exact",
                                  progress=False).path for fmt in (3, 2)}


@pytest.fixture(params=[3, 2], ids=["v3", "v2"])
def fmt(request) -> int:
    return request.param


@pytest.fixture
def copy(stores, fmt, tmp_path) -> Path:
    """A copy of the store of format ``fmt`` to damage."""
    return Path(shutil.copytree(stores[fmt], tmp_path / "store.zarr"))




def every_reader_refuses(store: Path, tmp_path: Path, *fragments: str, info: bool = True) -> None:
    """decompress, query, open_store, verify (exit 1) and, with ``info`` (damage its keys show), info refuse
    ``store`` naming ``fragments``."""
    if info:
        assert_one_line_error(run_cli("info", store), *fragments)
    assert_one_line_error(run_cli("decompress", store, tmp_path / "back.nc", "--quiet"), *fragments)
    assert_one_line_error(run_cli("query", store), *fragments)
    with pytest.raises(TempocodecError) as error:
        open_store(store, UV)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "back.nc").exists()
    result = run_cli("verify", store, "--quiet")
    assert result.exit_code == 1 and "NOT WHOLE" in result.output, result.output


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


def swap(a: Path, b: Path) -> None:
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def edit_meta(store: Path, edit) -> None:
    """Apply ``edit`` to a copy of the root attribute ``tempocodec`` and store it back, consolidated."""
    root = zarr.open_group(store, mode="r+")
    meta = json.loads(json.dumps(root.attrs["tempocodec"]))
    edit(meta)
    root.attrs["tempocodec"] = meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)


def drop_record(store: Path) -> None:
    """Remove the integrity record, as in a store written before records existed."""
    edit_meta(store, lambda meta: meta.pop("integrity"))


# --------------------------------------------------------------------------------------------------- what is written


def test_the_record_lists_every_object_of_every_array_with_its_crc(stores, fmt):
    root = zarr.open_group(stores[fmt], mode="r")
    record = integrity.read_record(root.attrs["tempocodec"], stores[fmt])
    arrays = integrity.arrays(root)
    listed = integrity.stored_keys(root)
    assert set(record.objects) == set(arrays) == set(listed) and len(arrays) > 15
    for path, array in arrays.items():
        keys = listed[path]
        assert keys and sorted(record.objects[path]) == keys, path
        base = stores[fmt] / array.path
        assert all(record.objects[path][k] == integrity.crc32((base / k).read_bytes()) for k in keys), path
    assert tuple(record.objects[f"{UV}/radiance"]) == RADIANCE_OBJECTS[fmt]


def test_every_lossless_array_has_a_crc32c_and_every_payload_its_position(stores, fmt):
    root = zarr.open_group(stores[fmt], mode="r")
    own = {f"{UV}/radiance": "tempocodec_vae", f"{UV}/radiance_error": "tempocodec_noise"}  # their own CRC-32s
    for path, array in integrity.arrays(root).items():
        meta = array.metadata.to_dict()
        top = [c["name"] for c in meta["codecs"]] if fmt == 3 else [meta["compressor"]["id"]]
        assert top == (["sharding_indexed"] if fmt == 3 else [own[path]]) if path in own \
            else top[-1] == "crc32c", (path, top)
    _, chunks = read_stored_chunks(root[f"{UV}/radiance"])
    assert sorted(chunks) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for at, chunk in chunks.items():
        assert payload.unpack(chunk).position == at
    _, errors = read_stored_chunks(root[f"{UV}/radiance_error"])  # each holds its radiance chunk's latent
    assert sorted(errors) == sorted(chunks)
    for at, chunk in errors.items():
        latent = HEADER.unpack(chunk[: HEADER.size])[4]
        assert payload.unpack(chunk[HEADER.size : HEADER.size + latent]).position == at


def test_verify_passes_a_whole_store(stores, fmt):
    result = run_cli("verify", stores[fmt], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["integrity_record"] and report["faults"] == [] and report["notes"] == []
    radiance = next(a for a in report["arrays"] if a["path"] == f"{UV}/radiance")
    assert radiance == {"path": f"{UV}/radiance", "codec": "vae", "checksum": "payload CRC-32",
                        "objects": len(RADIANCE_OBJECTS[fmt]), "chunks": 4}
    assert all(a["checksum"] == "crc32c" for a in report["arrays"] if a["codec"] == "lossless")
    human = run_cli("verify", stores[fmt], "--quiet")
    assert human.exit_code == 0 and human.output.strip().endswith("chunks checked") and "whole" in human.output


# --------------------------------------------------------------------------------------------------- missing objects


def test_a_missing_radiance_object_is_refused_naming_its_tiles(copy, fmt, tmp_path):
    lost = RADIANCE_OBJECTS[fmt][-1]
    (copy / UV / "radiance" / lost).unlink()
    tile = f"{lost} [64:70, {'0:70' if fmt == 3 else '64:70'}, 0:1028]"
    every_reader_refuses(copy, tmp_path, f"{UV}/radiance", "missing", tile)
    report = verify_store(copy, progress=False)
    assert [(f.array, f.item, f.fault) for f in report.faults] == [
        (f"{UV}/radiance", tile, "missing (it would read as fill)")]


def test_a_missing_lossless_chunk_is_refused(copy, fmt, tmp_path):
    key = "c/1/0" if fmt == 3 else "1.0"
    (copy / UV / "latitude" / key).unlink()
    every_reader_refuses(copy, tmp_path, f"{UV}/latitude", "missing", f"{key} [64:70, ")


def test_an_object_that_was_never_written_is_refused(copy, fmt, tmp_path):
    """A chunk appearing where none was stored would replace fill with whatever it holds."""
    key = "c/9/0" if fmt == 3 else "9.0"
    target = copy / UV / "latitude" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(copy / UV / "latitude" / ("c/0/0" if fmt == 3 else "0.0"), target)
    assert_one_line_error(run_cli("info", copy), "not written with the store", key)


# --------------------------------------------------------------------------------------------------- damaged bytes


@pytest.mark.parametrize("name", ["latitude"])
def test_a_bit_flip_in_a_lossless_array_fails_even_a_plain_xarray_read(copy, fmt, tmp_path, name):
    chunk = min(p for p in (copy / UV / name).rglob("*") if p.is_file() and not p.name.startswith((".", "zarr")))
    flip(chunk, 40)
    with pytest.raises((ValueError, RuntimeError), match="checksum"):
        _ = xr.open_zarr(copy, group=UV)[name].values  # the codecs' CRC-32C, without tempocodec's readers
    assert_one_line_error(run_cli("decompress", copy, tmp_path / "back.nc", "--quiet"), f"{UV}/{name}", "CRC-32")
    report = verify_store(copy, progress=False)
    faults = {(f.array, f.fault.split(":")[0]) for f in report.faults}
    assert (f"{UV}/{name}", "differs from what was written (CRC-32 mismatch)") in faults
    assert any(f.array == f"{UV}/{name}" and "checksum" in f.fault for f in report.faults)


@pytest.mark.parametrize("place", [40, 0.5], ids=["in its latent", "in its noise code"])
def test_a_bit_flip_in_an_exact_radiance_error_fails_every_read(copy, fmt, tmp_path, place):
    """The chunk's latent has the payload CRC-32, the coded values the CRC-32 of what they decode to."""
    chunk = min(p for p in (copy / UV / "radiance_error").rglob("*") if p.is_file() and not p.name.startswith((".", "zarr")))
    flip(chunk, place if isinstance(place, int) else int(chunk.stat().st_size * place))
    with pytest.raises(TempocodecError, match="radiance_error|tempocodec"):
        _ = xr.open_zarr(copy, group=UV)["radiance_error"].values  # the codec itself, without tempocodec's readers
    assert_one_line_error(run_cli("decompress", copy, tmp_path / "back.nc", "--quiet"), f"{UV}/radiance_error", "CRC-32")
    faults = {(f.array, f.fault.split(":")[0]) for f in verify_store(copy, progress=False).faults}
    assert (f"{UV}/radiance_error", "differs from what was written (CRC-32 mismatch)") in faults


def test_a_bit_flip_in_a_radiance_object_is_refused(copy, fmt, tmp_path):
    flip(copy / UV / "radiance" / RADIANCE_OBJECTS[fmt][0], 100)
    every_reader_refuses(copy, tmp_path, f"{UV}/radiance", "CRC-32 mismatch", info=False)
    assert any("CRC-32 mismatch" in f.fault and f.item.startswith("chunk") for f in verify_store(copy, progress=False).faults)


# --------------------------------------------------------------------------------------------------- swapped objects


def test_swapped_radiance_objects_are_refused(copy, fmt, tmp_path):
    first, second = RADIANCE_OBJECTS[fmt][0], RADIANCE_OBJECTS[fmt][-1]
    swap(copy / UV / "radiance" / first, copy / UV / "radiance" / second)
    assert_one_line_error(run_cli("decompress", copy, tmp_path / "back.nc", "--quiet"), "differ from what was written")
    with pytest.raises(TempocodecError, match="differ from what was written"):
        query_store(copy)
    faults = verify_store(copy, progress=False).faults
    assert {f.item.split(" ")[0] for f in faults if "moved or swapped" in f.fault} == {first, second}
    assert len([f for f in faults if "CRC-32 mismatch" in f.fault]) == 2


def test_swapped_radiance_objects_are_refused_by_position_without_the_record(copy, fmt, tmp_path):
    first, second = RADIANCE_OBJECTS[fmt][0], RADIANCE_OBJECTS[fmt][-1]
    drop_record(copy)
    swap(copy / UV / "radiance" / first, copy / UV / "radiance" / second)
    with pytest.raises(TempocodecError, match=r"chunk \(0, 0\): holds the payload of chunk \(1, [01]\) \(moved or swapped\)"):
        open_store(copy, UV)
    with pytest.raises(TempocodecError, match="moved or swapped"):
        query_store(copy)


def test_swapped_lossless_chunks_are_refused(copy, fmt, tmp_path):
    base = copy / UV / "latitude"
    swap(base / ("c/0/0" if fmt == 3 else "0.0"), base / ("c/1/0" if fmt == 3 else "1.0"))
    assert_one_line_error(run_cli("decompress", copy, tmp_path / "back.nc", "--quiet"), f"{UV}/latitude",
                          "2 chunk objects differ")
    with pytest.raises(TempocodecError, match=f"{UV}/latitude"):
        query_store(copy)


# --------------------------------------------------------------------------------------------------- verify


def test_verify_names_a_model_the_band_entry_does_not(copy, fmt):
    edit_meta(copy, lambda meta: meta["bands"][UV].update(model_sha256="0" * 64))
    report = verify_store(copy, progress=False)
    assert len(report.faults) == 1 and report.faults[0].array == f"{UV}/radiance"
    assert report.faults[0].fault.startswith(f"codec names model {MODEL!r}")
    assert report.faults[0].fault.endswith("the store's band entry 'tiny1028' (000000000000…)")


def test_verify_of_a_store_without_the_record_notes_what_it_cannot_check(copy, fmt):
    drop_record(copy)
    report = verify_store(copy, progress=False)
    assert report.ok and not report.recorded
    assert any("no integrity record" in note for note in report.notes)
    (copy / UV / "radiance" / RADIANCE_OBJECTS[fmt][0]).write_bytes(b"")
    report = verify_store(copy, progress=False)
    assert [f.array for f in report.faults] == [f"{UV}/radiance"]
    assert ("shorter than its" if fmt == 3 else "truncated tempocodec chunk") in report.faults[0].fault


def test_verify_of_a_damaged_record_or_a_foreign_directory(copy, tmp_path):
    edit_meta(copy, lambda meta: meta.update(integrity={"format": "tempocodec-integrity/1",
                                                          "objects": {"x": {"c/0": "not a crc"}}}))
    result = run_cli("verify", copy, "--json")
    assert result.exit_code == 1 and "integrity record is not" in json.loads(result.output)["faults"][0]["fault"]
    assert_one_line_error(run_cli("info", copy), "integrity record is not")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("verify", tmp_path / "empty"), "not a readable Zarr store")


@pytest.mark.parametrize("store", sorted((FIXTURE / "stores").glob("*/v*.zarr")), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_verify_passes_a_release_store_and_notes_what_it_cannot_check(tiny_models, store, tmp_path):
    report = verify_store(store, progress=False)
    assert report.ok and not report.recorded and len(report.notes) == 2
    assert "no integrity record" in report.notes[0] and "no checksum on their chunks" in report.notes[1]
    radiance = next(a for a in report.arrays if a.path == f"{UV}/radiance")
    assert radiance.chunks == 2 and radiance.checksum == "payload CRC-32"
    damaged = Path(shutil.copytree(store, tmp_path / "old.zarr"))
    first = min(p for p in (damaged / UV / "radiance").rglob("*") if p.is_file() and p.name[0] not in ".z")
    flip(first, 60)
    assert not verify_store(damaged, progress=False).ok  # the payload's own CRC-32 still stands


def test_a_whole_store_still_reads_the_same(stores, fmt, granule):
    """The checks change nothing of what a whole store decodes to."""
    decoded = open_store(stores[fmt], UV).radiance.values
    np.testing.assert_array_equal(decoded, xr.open_zarr(stores[fmt], group=UV, mask_and_scale=False).radiance.values)
    assert "tempocodec" in store_info(stores[fmt]).radiance(UV).codec
