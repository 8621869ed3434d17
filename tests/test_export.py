"""Tests for tempocodec.training.export: ONNX Runtime matches PyTorch, and the model directory follows docs/design.md."""

import pytest

# Skip this module, with this reason, where torch is not installed (before the imports below need it).
pytest.importorskip("torch", reason="needs torch: pip install -e '.[train]'")

import json

import numpy as np
import onnxruntime as ort
import torch

from tempocodec.errors import TempocodecError
from tempocodec.runtime.artifacts import combined_sha256, identity_sha256, sha256_bytes
from tempocodec.training.export import export_model
from tempocodec.training.vae import VAE, VAEConfig

pytestmark = pytest.mark.torch

CHANNELS = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = VAE(VAEConfig(n_channels=CHANNELS, latent_channels=4, widths=(8, 8, 16), res_blocks=(1, 1, 1))).eval()
    mu = np.linspace(10, 12, CHANNELS, dtype=np.float32)
    sigma = np.full(CHANNELS, 0.5, dtype=np.float32)
    out = export_model(model, mu, sigma, tmp_path_factory.mktemp("models") / "tiny", name="tiny",
                       band="band_290_490_nm", card={"Data": "simulated"}, config={"steps": 3})
    return model, out


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 64, 64), (3, 32, 48)])
def test_onnx_matches_torch(exported, shape):
    model, out = exported
    batch, height, width = shape
    x = torch.randn(batch, CHANNELS, height, width)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        recon = model.decode(mean)
    encoder = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    onnx_mean, onnx_logvar = encoder.run(["mean", "logvar"], {"x": x.numpy()})
    (onnx_recon,) = decoder.run(["x"], {"z": mean.numpy()})
    assert onnx_mean.shape == (batch, 4, height // 4, width // 4)
    assert onnx_recon.shape == (batch, CHANNELS, height, width)
    np.testing.assert_allclose(onnx_mean, mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_logvar, logvar.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_recon, recon.numpy(), atol=1e-4)


def test_directory_contents_and_manifest(exported):
    _, out = exported
    assert out.stat().st_mode & 0o777 == 0o755  # readable by others, like any installed data
    manifest = json.loads((out / "manifest.json").read_text())
    names = {"encoder.onnx", "decoder.onnx", "normalization.npz", "model_card.md", "training_config.json"}
    assert set(manifest["files"]) == names
    assert {p.name for p in out.iterdir()} == names | {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert sha256_bytes((out / name).read_bytes()) == digest
    coding = {name: manifest["files"][name] for name in ("decoder.onnx", "encoder.onnx", "normalization.npz")}
    assert manifest["sha256"] == identity_sha256(manifest["files"]) == combined_sha256(coding)
    assert manifest["sha256"] != combined_sha256(manifest["files"])
    assert (manifest["format"], manifest["n_channels"], manifest["latent_channels"]) == ("tempocodec-model/1", CHANNELS, 4)
    assert (manifest["tile"], manifest["downsample"]) == (64, 4)
    assert manifest["inputs"] == {"encoder": "x", "decoder": "z"}
    stats = np.load(out / "normalization.npz")
    assert stats["mu"].dtype == np.float32 and stats["mu"].shape == (CHANNELS,)
    assert json.loads((out / "training_config.json").read_text())["steps"] == 3
    assert "## Data" in (out / "model_card.md").read_text()


def test_existing_directory_and_bad_stats_are_refused(exported, tmp_path):
    model, out = exported
    with pytest.raises(TempocodecError, match="exists"):
        export_model(model, np.zeros(CHANNELS), np.ones(CHANNELS), out, name="tiny", band="b")
    with pytest.raises(TempocodecError, match="sigma"):
        export_model(model, np.zeros(CHANNELS), np.zeros(CHANNELS), tmp_path / "m", name="tiny", band="b")
    assert not (tmp_path / "m").exists()


def test_overwrite_replaces_directory(exported, tmp_path):
    model, _ = exported
    target = tmp_path / "m"
    export_model(model, np.zeros(CHANNELS), np.ones(CHANNELS), target, name="first", band="b")
    export_model(model, np.zeros(CHANNELS), np.ones(CHANNELS), target, name="second", band="b", overwrite=True)
    assert json.loads((target / "manifest.json").read_text())["name"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
