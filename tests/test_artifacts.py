"""Tests for tempocodec.runtime.artifacts: finding, verifying and opening model directories."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from tiny_model import SMALL_CHANNELS, model_variant

import tempocodec
from tempocodec.errors import TempocodecError
from tempocodec.runtime import artifacts
from tempocodec.runtime.artifacts import (
    load_model,
    models_dir,
    providers,
    record_files,
    resolve_model,
    session,
)

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models


def test_models_dir_is_the_repository_models_folder_in_a_source_install():
    assert models_dir() == Path(tempocodec.__file__).resolve().parent.parent / "models"


def test_resolve_by_path_and_by_name(tiny_models):
    assert resolve_model(tiny_models.small) == tiny_models.small
    assert resolve_model(str(tiny_models.small)) == tiny_models.small
    assert resolve_model("tiny") == tiny_models.root / "tiny"
    assert resolve_model("tiny1028") == tiny_models.root / "tiny1028"


def test_unknown_model_lists_the_known_ones(tiny_models):
    with pytest.raises(TempocodecError, match=r"'nope'.*known models: .*tiny, tiny1028"):
        resolve_model("nope")
    with pytest.raises(TempocodecError, match="no model directory"):
        resolve_model(tiny_models.root / "nope")


def test_load_model_reads_the_manifest_and_statistics(tiny_models):
    art = load_model(tiny_models.small)
    manifest = json.loads((tiny_models.small / "manifest.json").read_text())
    assert (art.name, art.band, art.n_channels, art.latent_channels, art.tile, art.downsample) == (
        "tiny", "band_290_490_nm", SMALL_CHANNELS, 4, 64, 4)
    assert art.sha256 == manifest["sha256"] and len(art.sha256) == 64
    stats = np.load(tiny_models.small / "normalization.npz")
    np.testing.assert_array_equal(art.mu, stats["mu"])
    assert art.sigma.dtype == np.float32 and art.sigma.shape == (SMALL_CHANNELS,)
    assert load_model(tiny_models.small) is art
    assert load_model(tiny_models.other).sha256 != art.sha256


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_changed_file_is_refused(tiny_models, tmp_path):
    model = _copy(tiny_models.small, tmp_path / "tiny")
    stats = np.load(model / "normalization.npz")
    np.savez(model / "normalization.npz", mu=stats["mu"] + 1, sigma=stats["sigma"])
    with pytest.raises(TempocodecError, match=r"normalization.npz: sha256 differs from the manifest"):
        load_model(model)


def test_a_changed_manifest_is_refused(tiny_models, tmp_path):
    model = _copy(tiny_models.small, tmp_path / "tiny")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["sha256"] = "0" * 64
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TempocodecError, match="does not match the sha256 of its coding files"):
        load_model(model)
    (model / "manifest.json").write_text("{not json")
    with pytest.raises(TempocodecError, match="unreadable manifest"):
        load_model(model)
    with pytest.raises(TempocodecError, match="not a tempocodec model directory"):
        load_model(tmp_path)


def test_missing_decoder_fails_only_when_decoding(tiny_models, tmp_path):
    model = model_variant(tiny_models.small, tmp_path / "tiny", shift=0.7)  # sessions are cached by sha256
    (model / "decoder.onnx").unlink()
    art = load_model(model)
    x = np.zeros((1, SMALL_CHANNELS, 8, 8), np.float32)
    mean, _ = session(art, "encoder").run(["mean", "logvar"], {"x": x})
    assert mean.shape == (1, 4, 2, 2)
    with pytest.raises(TempocodecError, match=r"decoder.onnx: missing"):
        session(art, "decoder")
    with pytest.raises(TempocodecError, match="no probes/none.onnx in its manifest"):
        session(art, "probes/none")


def test_a_corrupt_graph_is_refused_when_its_session_is_made(tiny_models, tmp_path):
    model = model_variant(tiny_models.small, tmp_path / "tiny", shift=0.8)
    art = load_model(model)
    (model / "decoder.onnx").write_bytes(b"garbage")
    with pytest.raises(TempocodecError, match=r"decoder.onnx: sha256 differs"):
        session(art, "decoder")


def test_sessions_are_cached_and_made_once_under_concurrency(tiny_models):
    art = load_model(tiny_models.full)
    found = []
    threads = [threading.Thread(target=lambda: found.append(session(art, "decoder"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 4 and all(s is found[0] for s in found)
    assert session(tiny_models.full, "decoder") is found[0]
    assert "CPUExecutionProvider" in found[0].get_providers()


def test_recorded_files_keep_the_identity_and_are_verified(tiny_models, tmp_path):
    model = _copy(tiny_models.small, tmp_path / "tiny")
    before = load_model(model).sha256
    (model / "probes").mkdir()
    (model / "probes" / "extra.json").write_text("{}")
    (model / "model_card.md").write_text("# rewritten card")
    files = record_files(model, ["probes/extra.json", "model_card.md"])
    art = load_model(model)
    assert art.sha256 == before and art.files == files and "probes/extra.json" in files
    tampered = _copy(model, tmp_path / "tampered")  # load_model caches per directory and manifest time
    (tampered / "probes" / "extra.json").write_text("{changed}")
    with pytest.raises(TempocodecError, match=r"extra.json: sha256 differs from the manifest"):
        load_model(tampered)
    with pytest.raises(TempocodecError, match="coding files"):
        record_files(model, ["decoder.onnx"])


@pytest.mark.parametrize(("env", "expected"), [
    (None, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("CPUExecutionProvider", ["CPUExecutionProvider"]),
    (" CPUExecutionProvider , CUDAExecutionProvider", ["CPUExecutionProvider", "CUDAExecutionProvider"]),
    ("", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_providers_prefer_cuda_unless_the_environment_chooses(monkeypatch, env, expected):
    monkeypatch.setattr(artifacts.ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider", "CUDAExecutionProvider"])
    if env is None:
        monkeypatch.delenv(artifacts.PROVIDERS_ENV, raising=False)
    else:
        monkeypatch.setenv(artifacts.PROVIDERS_ENV, env)
    assert providers() == expected


def test_an_unknown_provider_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(artifacts.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setenv(artifacts.PROVIDERS_ENV, "CUDAExecutionProvider,CPUExecutionProvider")
    with pytest.raises(TempocodecError, match=r"^TEMPOCODEC_PROVIDERS='CUDA.*': CUDAExecutionProvider not in this "
                                              r"onnxruntime build \(available: CPUExecutionProvider\)$"):
        providers()


def test_sessions_are_made_with_the_chosen_providers(tiny_models, tmp_path, monkeypatch):
    asked = []
    real = artifacts.ort.InferenceSession

    def recording(data, sess_options, providers):
        asked.append(providers)
        return real(data, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(artifacts.ort, "get_available_providers", lambda: ["CPUExecutionProvider", "CUDAExecutionProvider"])
    monkeypatch.setattr(artifacts.ort, "InferenceSession", recording)
    session(model_variant(tiny_models.small, tmp_path / "tiny", shift=0.93), "encoder")
    assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
