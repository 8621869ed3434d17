"""Golden codec cases (``tests/fixture/codec``, see its README): their layout, and the zarr writes and reads that
``tests/fixture/make_fixtures.py`` (writing them) and ``test_golden.py`` (checking them) share. No torch.

A *config* (``codec/<config>/config.json``) is an array's coding: ``zarr_format`` (3: the VAE codec is the array's
serializer; 2: its compressor), the array's ``fill_value`` and the face's own codec JSON. An *input*
(``codec/inputs/<input>.npy``) is float32 radiance ``(rows, cols, channels)`` of the tiny 16-channel model. Each
pair is a *case* ``codec/<config>/<input>/``: the stored chunk payloads ``<row>.<col>.bin`` (chunk grid indices;
chunks zarr does not store are absent), ``decoded.npy`` (the array read back) and ``latents.npz`` (``latent``,
``valid_fraction`` of :func:`tempocodec.codec.latents.read_latents`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from tiny_model import FIXTURE
from zarr.registry import get_codec_class

from tempocodec.codec import VAECodec, VAENumcodec

GOLDEN = FIXTURE / "codec"
INPUTS = GOLDEN / "inputs"
Chunks = dict[tuple[int, int], bytes]


@dataclass(frozen=True)
class GoldenConfig:
    """One committed array coding (``config.json``); ``codec`` is the v3 ``zarr.json`` codec entry or the numcodecs
    ``get_config()`` dict."""

    name: str
    zarr_format: int
    fill_value: float
    codec: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> GoldenConfig:
        """The config of directory ``path`` (``path/config.json``)."""
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return cls(path.name, int(data["zarr_format"]), float(data["fill_value"]), data["codec"])

    def to_json(self) -> dict[str, Any]:
        """``config.json`` content."""
        return {"zarr_format": self.zarr_format, "fill_value": self.fill_value, "codec": self.codec}

    def make_codec(self) -> VAECodec | VAENumcodec:
        """The codec this config names, through the face's own registry."""
        if self.zarr_format == 3:
            return get_codec_class(self.codec["name"]).from_dict(self.codec)
        return numcodecs.get_codec(self.codec)

    @property
    def decoded_fill(self) -> float:
        """What invalid elements decode to: the codec's ``fill_value`` when it names one, else the array's."""
        configuration = self.codec.get("configuration", self.codec)
        return float(configuration.get("fill_value", self.fill_value))


def configs() -> list[GoldenConfig]:
    """Every committed config, by name."""
    return [GoldenConfig.load(p.parent) for p in sorted(GOLDEN.glob("*/config.json"))]


def inputs() -> list[Path]:
    """Every committed input array, by name."""
    return sorted(INPUTS.glob("*.npy"))


def create_array(config: GoldenConfig, path: Path, shape: tuple[int, int, int]) -> zarr.Array:
    """An empty array of ``shape`` at ``path`` coded by ``config``, in chunks of the codec's tile."""
    codec = config.make_codec()
    coding: dict[str, Any] = {"serializer": codec, "compressors": None} if config.zarr_format == 3 else {
        "compressors": [codec], "filters": None}
    return zarr.create_array(store=path, shape=shape, dtype="float32", chunks=codec.config.chunk_shape,
                             fill_value=config.fill_value, zarr_format=config.zarr_format, **coding)


def _chunk_file(array: zarr.Array, path: Path, key: tuple[int, int]) -> Path:
    """Where the local store at ``path`` keeps chunk ``key`` of ``array``."""
    return path / array.metadata.encode_chunk_key((*key, 0))


def _grid(array: zarr.Array) -> list[tuple[int, int]]:
    """Chunk grid indices ``(row, col)`` of ``array``."""
    rows, cols = (-(-n // c) for n, c in zip(array.shape[:2], array.chunks[:2], strict=True))
    return [(r, c) for r in range(rows) for c in range(cols)]


def encode(config: GoldenConfig, x: np.ndarray, path: Path) -> Chunks:
    """Write ``x`` into a new array at ``path`` coded by ``config``; the stored chunk bytes by chunk index."""
    array = create_array(config, path, x.shape)
    array[:] = x
    files = {key: _chunk_file(array, path, key) for key in _grid(array)}
    return {key: file.read_bytes() for key, file in files.items() if file.is_file()}


def decode(config: GoldenConfig, shape: tuple[int, int, int], chunks: Chunks, path: Path) -> zarr.Array:
    """A read-only array at ``path`` coded by ``config`` whose stored chunks are ``chunks``."""
    array = create_array(config, path, shape)
    for key, data in chunks.items():
        file = _chunk_file(array, path, key)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
    return zarr.open_array(path, mode="r")


def read_chunks(case: Path) -> Chunks:
    """The committed payloads of a case directory."""
    found = {}
    for file in case.glob("*.bin"):
        row, col = file.stem.split(".")
        found[(int(row), int(col))] = file.read_bytes()
    return found


def write_chunks(case: Path, chunks: Chunks) -> None:
    """Write payloads into a case directory (replacing those there)."""
    for old in case.glob("*.bin"):
        old.unlink()
    for (row, col), data in chunks.items():
        (case / f"{row}.{col}.bin").write_bytes(data)
