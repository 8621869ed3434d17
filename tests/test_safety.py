"""Safe outputs and damaged inputs: tempocodec.atomic, --overwrite, concurrent writers, stale partials, file system
faults and damaged shards, on small simulated granules and the tiny models."""

from __future__ import annotations

import ast
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from helpers_cli import assert_one_line_error, run_cli

import tempocodec.granule.netcdf_write as netcdf_module
import tempocodec.runtime.store as store_module
from tempocodec.atomic import ANY_FILE, Replaceable, atomic_dir, atomic_file
from tempocodec.errors import TempocodecError
from tempocodec.evaluation.report import write_report
from tempocodec.evaluation.run import evaluate_store
from tempocodec.runtime.query import write_products
from tempocodec.runtime.store import compress_granule, decompress_store, is_store, open_store, store_info
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
MODEL = "tiny1028"
PACKAGE = Path(__file__).resolve().parents[1] / "tempocodec"


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    """A 40×70 simulated UV granule, its L2 truth beside it."""
    return write_simulated(tmp_path_factory.mktemp("granule"), 40, 70, seed=8, bands="uv")[0]


@pytest.fixture(scope="module")
def store(granule, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "g.zarr"
    compress_granule(granule, out, model=MODEL, progress=False)
    return out




def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".partial-" in p.name or ".tmp-" in p.name)


# --------------------------------------------------------------------------------------------------- the helper


def test_atomic_file_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "sub" / "out.txt"
    with atomic_file(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".out.txt.partial-") and tmp.is_file()
        tmp.write_text("done")
        assert not out.exists()
    assert out.read_text() == "done" and partials(out.parent) == []
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "never.txt") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_an_output_that_appears_meanwhile_is_never_replaced(tmp_path, kind):
    out = tmp_path / "out"
    writer = atomic_file if kind == "file" else atomic_dir
    with pytest.raises(TempocodecError, match="created by another writer"), writer(out) as tmp:
        (tmp if kind == "file" else tmp / "data").write_text("mine")
        if kind == "file":
            out.write_text("theirs")
        else:
            out.mkdir()
            (out / "data").write_text("theirs")
    assert (out if kind == "file" else out / "data").read_text() == "theirs"
    assert partials(tmp_path) == []


def test_replace_only_what_the_writer_recognises(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("user data")
    with pytest.raises(TempocodecError, match="exists: pass --overwrite"), atomic_dir(out):
        pass
    never_ours = Replaceable(lambda p: False, "ours")
    with pytest.raises(TempocodecError, match="is not ours: refusing"), atomic_dir(out, replace=never_ours):
        pass
    assert (out / "keep").read_text() == "user data"
    with atomic_dir(out, replace=Replaceable(lambda p: (p / "keep").exists(), "ours")) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and sorted(p.name for p in out.iterdir()) == ["new"]
    with pytest.raises(TempocodecError, match="is not a regular file"), atomic_file(out, replace=ANY_FILE):
        pass


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    gone, alive = dead_pid(), os.getpid()
    (tmp_path / f".out.nc.partial-{gone}-0badcafe").write_text("stale")
    (tmp_path / f".out.nc.partial-{gone}-deadbeef").mkdir()
    (tmp_path / f".out.nc.tmp-{gone}-12345678").write_text("stale, from an earlier version")
    (tmp_path / f".out.nc.partial-{alive}-0000cafe").write_text("a writer still at work")
    (tmp_path / f".other.nc.partial-{gone}-0badcafe").write_text("another output's")
    with atomic_file(tmp_path / "out.nc") as tmp:
        tmp.write_text("new")
    assert partials(tmp_path) == [f".other.nc.partial-{gone}-0badcafe", f".out.nc.partial-{alive}-0000cafe"]


def test_each_constant_has_one_definition():
    """BANDS, the band selections, the channel count and the tile size are assigned in one module each."""
    names = {"BANDS", "BAND_CHOICES", "BAND_ALIASES", "N_CHANNELS", "TILE"}
    homes: dict[str, list[str]] = {name: [] for name in names}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    homes[target.id].append(str(path.relative_to(PACKAGE)))
    assert homes == {"BANDS": ["bands.py"], "BAND_CHOICES": ["bands.py"], "BAND_ALIASES": [],
                     "N_CHANNELS": ["bands.py"], "TILE": ["prepare/tiles.py"]}


def test_every_writer_renames_through_the_atomic_helper():
    """No module but tempocodec/atomic.py moves a temporary output into place itself (os.replace, os.rename,
    Path.replace, tempfile's temporary names)."""
    movers = {("os", "replace"), ("os", "rename"), ("tempfile", "mkdtemp"), ("tempfile", "mkstemp")}
    found = []
    for root in ("tempocodec", "scripts", "benchmarks"):
        for path in (PACKAGE.parent / root).rglob("*.py"):
            if path == PACKAGE / "atomic.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                path_move = node.func.attr == "replace" and len(node.args) == 1 and not node.keywords
                if (owner, node.func.attr) in movers or path_move:  # str.replace takes two arguments
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []


# --------------------------------------------------------------------------------------------------- --overwrite


def test_overwrite_replaces_only_a_store(granule, tiny_models, tmp_path):
    thesis = tmp_path / "d"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    assert_one_line_error(run_cli("compress", granule, thesis, "--model", MODEL, "--quiet", "--overwrite"),
                          str(thesis), "not a tempocodec store")
    assert (thesis / "thesis.tex").read_text() == "years of work"
    plain = tmp_path / "plain"
    plain.write_text("a file")
    with pytest.raises(TempocodecError, match="not a tempocodec store"):  # the command line refuses it earlier (click)
        compress_granule(granule, plain, model=MODEL, overwrite=True, progress=False)
    assert plain.read_text() == "a file"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("compress", granule, empty, "--model", MODEL, "--quiet", "--overwrite").exit_code == 0
    assert is_store(empty) and not is_store(thesis) and not is_store(plain)
    assert partials(tmp_path) == []


def test_a_second_compress_to_the_same_out_fails(granule, tiny_models, tmp_path, monkeypatch):
    """Both runs find OUT absent; the one that finishes later must not replace the other's store."""
    out = tmp_path / "out.zarr"
    finish = store_module._finish

    def finish_then_race(*args, **kwargs):
        finish(*args, **kwargs)
        monkeypatch.setattr(store_module, "_finish", finish)
        compress_granule(granule, out, model=MODEL, drop_radiance_error=True, progress=False)  # the other run

    monkeypatch.setattr(store_module, "_finish", finish_then_race)
    with pytest.raises(TempocodecError, match=f"{out} was created by another writer"):
        compress_granule(granule, out, model=MODEL, progress=False)
    assert "radiance_error" not in open_store(out, UV)  # the other run's store, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_decompress_overwrite_replaces_only_a_netcdf_file(store, tmp_path):
    notes = tmp_path / "notes.nc"
    notes.write_text("not netCDF")
    assert_one_line_error(run_cli("decompress", store, notes, "--quiet", "--overwrite"), str(notes), "not a netCDF-4 file")
    assert notes.read_text() == "not netCDF"
    back = tmp_path / "back.nc"
    assert run_cli("decompress", store, back, "--quiet").exit_code == 0
    assert_one_line_error(run_cli("decompress", store, back, "--quiet"), "--overwrite")
    assert run_cli("decompress", store, back, "--quiet", "--overwrite").exit_code == 0
    assert partials(tmp_path) == []


def test_a_second_decompress_to_the_same_out_fails(store, tmp_path, monkeypatch):
    out = tmp_path / "back.nc"
    write_file = netcdf_module._write_file
    theirs: list[int] = []

    def write_then_race(*args, **kwargs):
        write_file(*args, **kwargs)
        monkeypatch.setattr(netcdf_module, "_write_file", write_file)
        decompress_store(store, out, progress=False)  # the other run
        theirs.append(out.stat().st_ino)

    monkeypatch.setattr(netcdf_module, "_write_file", write_then_race)
    with pytest.raises(TempocodecError, match=f"{out} was created by another writer"):
        decompress_store(store, out, progress=False)
    assert out.stat().st_ino == theirs[0] and partials(tmp_path) == []


def test_query_output_replaces_only_a_netcdf_file(tmp_path):
    notes = tmp_path / "notes.nc"
    notes.write_text("not netCDF")
    with pytest.raises(TempocodecError, match="not a netCDF-4 file"):
        write_products(xr.Dataset(), notes, overwrite=True)
    assert notes.read_text() == "not netCDF"


@pytest.fixture(scope="module")
def evaluation(granule, store):
    return evaluate_store(granule, store, band=UV, progress=False)


def test_evaluate_report_is_not_written_over_without_overwrite(granule, store, evaluation, tmp_path):
    report = tmp_path / "report"
    assert write_report(evaluation, report) == report / "report.md"
    first = (report / "report.md").stat().st_mtime_ns
    with pytest.raises(TempocodecError, match="exists: pass --overwrite"):
        write_report(evaluation, report)
    assert (report / "report.md").stat().st_mtime_ns == first
    assert_one_line_error(run_cli("evaluate", granule, store, "--report", report, "--quiet"), "--overwrite")
    write_report(evaluation, report, overwrite=True)
    assert (report / "report.md").stat().st_mtime_ns != first and partials(tmp_path) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("mine")
    assert_one_line_error(run_cli("evaluate", granule, store, "--report", mine, "--quiet", "--overwrite"),
                          str(mine), "not an evaluation report directory")
    assert [p.name for p in mine.iterdir()] == ["notes.md"]


# --------------------------------------------------------------------------------------------------- stale partials


def test_decompress_removes_the_partials_of_killed_runs(store, tmp_path):
    gone, alive = dead_pid(), os.getpid()
    killed = [f".back.nc.partial-{gone}-0badcafe", f".back.nc.tmp-{gone}-0badcafe"]  # .tmp-: earlier versions
    for name in killed:
        (tmp_path / name).write_bytes(b"\x89HDF\r\n\x1a\n half a file")
    (tmp_path / f".back.nc.partial-{alive}-0000cafe").write_text("a decompress still at work")
    assert run_cli("decompress", store, tmp_path / "back.nc", "--quiet").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".back.nc.partial-{alive}-0000cafe", "back.nc"]


# --------------------------------------------------------------------------------------------------- file system faults


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A directory nothing can be created in: mode 0o555, and for root (whom modes do not stop) os.mkdir and
    os.open refusing, as the kernel would, to create anything in it."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        mkdir, open_ = os.mkdir, os.open

        def refuse(path) -> None:
            if Path(os.path.abspath(path)).is_relative_to(ro):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: refuse(path) or mkdir(path, *a, **k))
        monkeypatch.setattr(os, "open", lambda path, flags, *a, **k: (flags & os.O_CREAT and refuse(path))
                            or open_(path, flags, *a, **k))
    yield ro
    ro.chmod(0o755)


def test_outputs_in_a_read_only_directory_are_one_line_errors(granule, store, read_only):
    out = read_only / "out.zarr"
    assert_one_line_error(run_cli("compress", granule, out, "--model", MODEL, "--quiet"), str(out), "Permission denied")
    back = read_only / "back.nc"
    assert_one_line_error(run_cli("decompress", store, back, "--quiet"), str(back), "Permission denied")
    assert list(read_only.iterdir()) == []


def test_outputs_under_a_regular_file_are_one_line_errors(granule, store, evaluation, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    commands = [("compress", granule, blocker / "x.zarr", "--model", MODEL, "--quiet"),
                ("compress", granule, blocker / "sub" / "x.zarr", "--model", MODEL, "--quiet"),
                ("decompress", store, blocker / "x.nc", "--quiet")]
    for command in commands:
        assert_one_line_error(run_cli(*command), f"{blocker} is a file, not a directory")
    with pytest.raises(TempocodecError, match=f"{blocker} is a file, not a directory"):
        write_report(evaluation, blocker / "report")
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# --------------------------------------------------------------------------------------------------- damaged shards


def damage(store: Path, to: Path, how: str) -> Path:
    """A copy of ``store`` at ``to`` with its first radiance shard emptied, cut in half or its index flipped."""
    shutil.copytree(store, to)
    shard = next(f for f in sorted((to / UV / "radiance" / "c").rglob("*")) if f.is_file())
    data = bytearray(shard.read_bytes())
    if how == "empty":
        data = bytearray()
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:  # the shard index (its chunk offsets and lengths) is at the end of a shard
        data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    return to


@pytest.mark.parametrize("how", ["empty", "truncated", "index"])
def test_damaged_shard_in_decompress_is_a_one_line_error(store, tmp_path, how):
    bad = damage(store, tmp_path / "bad.zarr", how)
    assert_one_line_error(run_cli("decompress", bad, tmp_path / "back.nc", "--quiet"), str(bad), "damaged store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zarr"]
    assert "tempocodec.vae" in store_info(bad).radiance(UV).codec  # the metadata is intact: only reading the data fails


@pytest.mark.parametrize("how", ["empty", "truncated", "index"])
def test_damaged_shard_in_query_is_a_one_line_error(store, tmp_path, how):
    bad = damage(store, tmp_path / "bad.zarr", how)
    line = assert_one_line_error(run_cli("query", bad), str(bad), "damaged store", f"{UV}/radiance")
    assert "no probes" not in line  # the damage is found first: the tiny model has no probes
