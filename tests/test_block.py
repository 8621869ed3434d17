"""Tests for the basis-block VAE and its training: linear start, resume, torchrun (gloo), ONNX export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install -e '.[train]'")
pytestmark = pytest.mark.torch

from tempocodec.training.block_train import (  # noqa: E402
    BlockTrainConfig,
    CoefficientSet,
    build_model,
    load_basis,
    load_block_checkpoint,
    train_block,
)
from tempocodec.training.blockvae import BlockVAEConfig  # noqa: E402

C, K = 16, 4
MODEL = BlockVAEConfig(n_channels=C, basis_components=K, latent_channels=8, hidden=8, depth=1, tile=16)
FAST = BlockTrainConfig(steps=6, batch_size=4, crop=8, eval_every=3, init_scenes=6, warmup=2)


def _smooth(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Spatially smooth random fields (n, size, size)."""
    grid = rng.normal(size=(n, size // 4 + 1, size // 4 + 1))
    return np.kron(grid, np.ones((4, 4)))[:, :size, :size]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blockdata")
    rng = np.random.default_rng(3)
    components = np.linalg.qr(rng.normal(size=(C, K)))[0].T.astype(np.float32)
    np.savez(out / "basis.npz", mu=np.full(C, 28.0, np.float32), sigma=np.full(C, 0.5, np.float32),
             components=components, weights=np.full(C, 0.5, np.float32),
             scales=np.linspace(1.0, 0.1, K).astype(np.float32), explained=np.full(K, 0.25), band=np.asarray("band_x"))
    for name, n in (("train", 8), ("valid", 2)):
        coefficients = np.stack([_smooth(rng, n, 16) for _ in range(K)], axis=1).astype(np.float16)
        mask = np.ones((n, 16, 16), bool)
        mask[:, 3, :] = False
        np.savez(out / f"{name}.npz", coefficients=coefficients, mask=mask, seeds=np.arange(n))
    return out


def test_the_model_starts_as_the_linear_block_transform(data_dir):
    model = build_model(MODEL, load_basis(data_dir))
    train = CoefficientSet.load(data_dir / "train.npz")
    model.init_block_transform(train.coefficients, train.mask)
    model.eval()
    with torch.no_grad():
        p = train.coefficients[:2]
        mean, _ = model.encode_coefficients(p)
        blocks = torch.nn.functional.pixel_unshuffle(p, 4)
        linear = model.dec_linear(model.enc_linear(blocks))
        np.testing.assert_allclose(model.decode_coefficients(mean).numpy(),
                                   torch.nn.functional.pixel_shuffle(linear, 4).numpy(), atol=1e-5)
        # radiance space is the coefficient space through the frozen basis maps
        x = torch.randn(1, C, 16, 16)
        projected = torch.nn.functional.conv2d(x, model.project[:, :, None, None])
        np.testing.assert_allclose(model.encode(x)[0].numpy(), model.encode_coefficients(projected)[0].numpy(),
                                   atol=1e-5)


def test_a_resumed_run_equals_an_uninterrupted_one(data_dir, tmp_path):
    whole = train_block(data_dir, tmp_path / "whole", MODEL, FAST)
    assert whole["finished"] and whole["step"] == FAST.steps
    first = train_block(data_dir, tmp_path / "split", MODEL, BlockTrainConfig(**{**FAST.__dict__, "steps": 3}))
    assert first["step"] == 3
    second = train_block(data_dir, tmp_path / "split", MODEL, FAST, resume=True)
    assert second["finished"]
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 3, 6] and all(np.isfinite(r["valid_rms"]) for r in log)


def test_a_run_directory_is_not_overwritten(data_dir, tmp_path):
    train_block(data_dir, tmp_path / "run", MODEL, BlockTrainConfig(**{**FAST.__dict__, "steps": 1}))
    from tempocodec.errors import TempocodecError

    with pytest.raises(TempocodecError, match="holds a run"):
        train_block(data_dir, tmp_path / "run", MODEL, FAST)


def test_torchrun_two_cpu_processes_on_gloo(data_dir, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "tempocodec", "train-block", str(data_dir), str(run), "--steps", "4", "--batch-size", "2",
           "--crop", "8", "--hidden", "8", "--depth", "1", "--eval-every", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = torch.load(run / "last.pt", weights_only=False)
    assert saved["state"]["step"] == 4
    assert "done: 4 steps" in done.stdout


def test_export_gives_onnx_graphs_equal_to_the_model(data_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from tempocodec.training.export import export_block_run

    train_block(data_dir, tmp_path / "run", MODEL, BlockTrainConfig(**{**FAST.__dict__, "steps": 2}))
    out = export_block_run(tmp_path / "run", data_dir, tmp_path / "model", name="tiny-block")
    model = load_block_checkpoint(tmp_path / "run" / "best.pt")
    x = np.random.default_rng(0).normal(size=(2, C, 16, 32)).astype(np.float32)
    mean = ort.InferenceSession(str(out / "encoder.onnx")).run(None, {"x": x})[0]
    decoded = ort.InferenceSession(str(out / "decoder.onnx")).run(None, {"z": mean})[0]
    with torch.no_grad():
        expected_mean = model.encode(torch.from_numpy(x))[0].numpy()
        expected = model.decode(torch.from_numpy(expected_mean)).numpy()
    np.testing.assert_allclose(mean, expected_mean, atol=1e-4)
    np.testing.assert_allclose(decoded, expected, atol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["band"] == "band_x" and manifest["latent_channels"] == 8
