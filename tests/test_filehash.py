"""Tests for tempocodec.runtime.filehash: a model file is hashed once, then trusted by its stat until it changes."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_model import FIXTURE_MODELS, model_variant

from tempocodec.errors import TempocodecError
from tempocodec.runtime import artifacts, filehash
from tempocodec.runtime.artifacts import load_model, session

pytest_plugins = ["tiny_model_fixture"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache directory, as a new process would see it; every file old enough to be recorded."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(filehash.CACHE_ENV, str(folder))
    monkeypatch.setattr(filehash, "RACY_NS", 0)
    _new_process(monkeypatch)
    return folder


def _new_process(monkeypatch) -> None:
    """Forget what this process verified (the records read and load_model's cache), as a new process would."""
    monkeypatch.setattr(filehash, "_records", None)
    monkeypatch.setattr(filehash, "_unsaved", set())
    artifacts._load_model.cache_clear()


def _count_hashes(monkeypatch) -> list[int]:
    """Record the size of each file body that filehash hashes from now on."""
    sizes: list[int] = []
    real = filehash.digest
    monkeypatch.setattr(filehash, "digest", lambda data: sizes.append(len(data)) or real(data))
    return sizes


def _records() -> dict:
    return json.loads(Path(filehash.cache_file()).read_text(encoding="utf-8"))["files"]


def test_a_model_is_hashed_once_then_trusted_by_stat(tiny_models, tmp_path, cache, monkeypatch):
    model = model_variant(tiny_models.small, tmp_path / "tiny", shift=0.91)  # a sha256 of its own: no cached session
    listed = json.loads((model / "manifest.json").read_text())["files"]
    hashed = _count_hashes(monkeypatch)
    art = load_model(model)
    session(art, "encoder")  # its bytes were just hashed by load_model: read, not hashed again
    assert len(hashed) == len(listed)
    assert sorted(Path(p).relative_to(model.resolve()).as_posix() for p in _records()) == sorted(listed)
    _new_process(monkeypatch)
    hashed.clear()
    assert load_model(model).sha256 == art.sha256
    assert hashed == []


def test_a_second_process_hashes_nothing_unchanged(tmp_path):
    """Across real processes: the first hashes each file once (the encoder's bytes too), the second none."""
    model = shutil.copytree(FIXTURE_MODELS / "tiny", tmp_path / "tiny")
    code = ("import sys; from tempocodec.runtime.artifacts import load_model, session; "
            "from tempocodec.runtime import filehash as f; f.RACY_NS = 0; n = []; real = f.digest; "
            "f.digest = lambda d: n.append(1) or real(d); session(load_model(sys.argv[1]), 'encoder'); print(len(n))")
    env = {**os.environ, filehash.CACHE_ENV: str(tmp_path / "cache")}
    counts = [subprocess.run([sys.executable, "-c", code, str(model)], env=env, capture_output=True, text=True,
                             check=True).stdout.strip() for _ in range(2)]
    files = json.loads((model / "manifest.json").read_text())["files"]
    assert counts == [str(len(files)), "0"]


def _rewrite_in_place(path: Path, same_size: bool) -> None:
    """Change the bytes of ``path`` in place (same inode): one byte flipped with the size and modification time kept,
    so only the status-change time tells; or a byte appended."""
    before = path.stat()
    time.sleep(0.05)  # past the file system's timestamp tick
    data = bytearray(path.read_bytes())
    if same_size:
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"\0"
    with open(path, "r+b") as file:
        file.write(data)
    if same_size:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert after.st_ino == before.st_ino and (after.st_size == before.st_size) == same_size
    assert (after.st_mtime_ns == before.st_mtime_ns) == same_size and after.st_ctime_ns != before.st_ctime_ns


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size-same-mtime", "longer"])
def test_a_file_changed_after_its_record_is_hashed_again(tiny_models, tmp_path, cache, monkeypatch, same_size):
    model = shutil.copytree(tiny_models.small, tmp_path / "tiny")
    load_model(model)
    _rewrite_in_place(model / "normalization.npz", same_size)
    _new_process(monkeypatch)
    with pytest.raises(TempocodecError, match=r"normalization.npz: sha256 differs from the manifest"):
        load_model(model)


def test_a_graph_changed_after_load_model_is_refused_by_session(tiny_models, tmp_path, cache):
    model = model_variant(tiny_models.small, tmp_path / "tiny", shift=0.9)  # a sha256 of its own: no cached session
    art = load_model(model)
    _rewrite_in_place(model / "decoder.onnx", same_size=True)
    with pytest.raises(TempocodecError, match=r"decoder.onnx: sha256 differs from the manifest"):
        session(art, "decoder")


def test_files_changed_just_before_their_hash_are_not_recorded(tiny_models, tmp_path, cache, monkeypatch):
    monkeypatch.setattr(filehash, "RACY_NS", 60_000_000_000)  # a minute: the copy is more recent
    model = shutil.copytree(tiny_models.small, tmp_path / "tiny")
    load_model(model)
    assert not filehash.cache_file().exists()


@pytest.mark.parametrize("damage", ["not json", '{"format": "other", "files": {}}', '{"format": "%s", "files": 3}'])
def test_a_corrupt_cache_is_ignored_and_replaced(tiny_models, tmp_path, cache, damage):
    cache.mkdir()
    filehash.cache_file().write_text(damage.replace("%s", filehash.CACHE_FORMAT), encoding="utf-8")
    model = shutil.copytree(tiny_models.small, tmp_path / "tiny")
    assert load_model(model).name == "tiny"
    assert len(_records()) == len(json.loads((model / "manifest.json").read_text())["files"])


def test_an_unwritable_cache_is_ignored(tiny_models, tmp_path, cache, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(filehash.CACHE_ENV, str(blocker / "cache"))  # its directory cannot be made
    model = shutil.copytree(tiny_models.small, tmp_path / "tiny")
    assert load_model(model).name == "tiny"
    assert not (blocker / "cache").exists()


def test_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(filehash.CACHE_ENV, str(tmp_path / "own"))
    assert filehash.cache_file() == tmp_path / "own" / "file-hashes.json"
    monkeypatch.setenv(filehash.CACHE_ENV, "relative/ignored")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert filehash.cache_dir() == tmp_path / "xdg" / "tempocodec"
    monkeypatch.delenv(filehash.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert filehash.cache_dir() == tmp_path / "home" / ".cache" / "tempocodec"
