"""The tiny test models (committed under ``tests/fixture/models``), synthetic radiance, and the codec's expected
output computed by direct ONNX calls, for the codec tests. No torch: the models were exported once by
``tests/fixture/make_fixtures.py`` (:mod:`torch_models`); the session fixture that serves them is in
``tiny_model_fixture.py``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tempocodec.prepare.normalize import denormalize, normalize
from tempocodec.runtime.artifacts import identity_sha256, sha256_bytes

SMALL_CHANNELS = 16
LOG_RADIANCE = 30.0
"""log of a typical TEMPO radiance (about 1e13 photons/s/cm²/nm/sr)."""
FIXTURE = Path(__file__).resolve().parent / "fixture"
FIXTURE_MODELS = FIXTURE / "models"
"""The committed tiny models: ``tiny`` (16 channels, 4 latent channels) and ``tiny1028`` (1028, 32)."""


@dataclass(frozen=True)
class TinyModels:
    """Paths of the tiny model directories; ``root`` is on ``TEMPOCODEC_MODELS``."""

    root: Path
    small: Path
    full: Path
    other: Path


def tiny_stats(n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalization ``mu``, ``sigma`` float32 ``(n_channels,)`` of the tiny models: log radiance around
    :data:`LOG_RADIANCE`."""
    channel = np.arange(n_channels, dtype=np.float32)
    mu = (LOG_RADIANCE + 0.5 * np.sin(channel / 7.0)).astype(np.float32)
    sigma = (0.3 + 0.1 * np.cos(channel / 5.0)).astype(np.float32)
    return mu, sigma


def model_variant(src: Path, dst: Path, shift: float, name: str | None = None) -> Path:
    """Copy model directory ``src`` to ``dst`` with ``mu`` shifted by ``shift`` (log radiance), renamed ``name``
    (None: the same name), and the manifest rewritten: the same graphs under another identity (sha256) with other
    statistics, so other decoded values.

    Serves tests that need a second model of the same name without exporting one (no torch).
    """
    shutil.copytree(src, dst)
    with np.load(dst / "normalization.npz") as stats:
        mu, sigma = stats["mu"] + np.float32(shift), stats["sigma"]
    np.savez(dst / "normalization.npz", mu=mu, sigma=sigma)
    manifest = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["normalization.npz"] = sha256_bytes((dst / "normalization.npz").read_bytes())
    manifest["sha256"] = identity_sha256(manifest["files"])
    manifest["name"] = manifest["name"] if name is None else name
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return dst


def radiance(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth synthetic radiance float32 ``(rows, cols, channels)`` around exp(:data:`LOG_RADIANCE`), all valid."""
    rng = np.random.default_rng(seed)
    rows, cols, channels = shape
    r = np.linspace(0, 3, rows, dtype=np.float32)[:, None, None]
    c = np.linspace(0, 2, cols, dtype=np.float32)[None, :, None]
    k = np.arange(channels, dtype=np.float32)[None, None, :]
    log_l = LOG_RADIANCE + 0.5 * np.sin(k / 7.0) + 0.2 * np.sin(r + c + k / 40.0)
    log_l = log_l + 0.01 * rng.standard_normal(shape, dtype=np.float32)
    return np.exp(log_l).astype(np.float32)


def _edge_pad(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Replicate the last row and column of ``array`` ``(C, h, w)`` out to ``(C, rows, cols)``."""
    return np.pad(array, ((0, 0), (0, rows - array.shape[1]), (0, cols - array.shape[2])), mode="edge")


def reference_latent(model_dir: Path, tile: np.ndarray, extent: tuple[int, int], dtype: str = "float16") -> np.ndarray:
    """What the codec should store for a chunk ``(rows, cols, C)`` whose valid pixels lie inside ``extent``.

    Invalid elements must be non-finite or ``|L| > 1e30``. The normalized valid region is edge-padded to the tile,
    run through ``encoder.onnx`` directly, and the latent mean cropped to ``ceil(extent / 4)`` and cast to ``dtype``:
    float ``(Z, ceil(h/4), ceil(w/4))``.
    """
    stats = np.load(model_dir / "normalization.npz")
    h, w = extent
    rows, cols, _ = tile.shape
    x = normalize(tile[:h, :w], stats["mu"], stats["sigma"]).transpose(2, 0, 1)
    encoder = ort.InferenceSession(str(model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (mean,) = encoder.run(["mean"], {"x": _edge_pad(x, rows, cols)[None]})
    return mean[0, :, : -(-h // 4), : -(-w // 4)].astype(dtype)


def reference_roundtrip(model_dir: Path, tile: np.ndarray, extent: tuple[int, int]) -> np.ndarray:
    """The codec's expected reconstruction of the valid region ``extent`` of a chunk, by direct ONNX calls:
    float32 ``(h, w, C)``."""
    stats = np.load(model_dir / "normalization.npz")
    rows, cols, _ = tile.shape
    latent = reference_latent(model_dir, tile, extent).astype(np.float32)
    decoder = ort.InferenceSession(str(model_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    (x,) = decoder.run(["x"], {"z": _edge_pad(latent, rows // 4, cols // 4)[None]})
    radiance = denormalize(x[0], stats["mu"], stats["sigma"], axis=0).transpose(1, 2, 0)
    return radiance[: extent[0], : extent[1]]
