"""The latent grid of a VAE-coded radiance array, read straight from the stored chunk bytes (no decoder run).

Every stored chunk holds the encoder's latent mean over its valid extent (``tempocodec.codec.payload``). Laid side by side
they form one latent grid over the whole array: latent cell ``(a, b)`` covers pixel rows ``[d*a, d*a + d)`` and
columns ``[d*b, d*b + d)`` of ``(mirror_step, xtrack)`` (``d`` = downsample, 4), clipped to the array. The chunk
bytes come from :mod:`tempocodec.codec.stored`.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
import zarr

from tempocodec.codec import payload
from tempocodec.codec.stored import read_stored_chunks
from tempocodec.errors import TempocodecError


def _pool(counts: np.ndarray, d: int) -> np.ndarray:
    """Sum int ``(h, w)`` over ``d × d`` blocks -> ``(ceil(h/d), ceil(w/d))``."""
    h, w = counts.shape
    padded = np.pad(counts, ((0, -h % d), (0, -w % d)))
    return padded.reshape(padded.shape[0] // d, d, padded.shape[1] // d, d).sum(axis=(1, 3))


def read_latents(array: zarr.Array) -> xr.DataArray:
    """Latent means of a VAE-coded radiance array ``(mirror_step, xtrack, spectral_channel)``, without decoding.

    Returns float32 ``(latent_channel, latent_row, latent_col)`` on the latent grid covering the array
    (``ceil(rows/d) × ceil(cols/d)``), NaN in cells with no valid pixel (also cells of chunks never stored).
    Coordinates: ``pixel_row_start``/``pixel_row_stop`` along ``latent_row`` and ``pixel_col_start``/``pixel_col_stop``
    along ``latent_col`` (the pixel block of each cell, stop exclusive, clipped to the array), and ``valid_fraction``
    ``(latent_row, latent_col)``: valid elements of the cell's block over all of its elements (pixels × channels).
    """
    config, chunks = read_stored_chunks(array)
    rows, cols, channels = array.shape
    where = str(array.store_path)
    shape = config.chunk_shape
    parsed = {key: payload.unpack(data, where=f"{where} chunk {key}", chunk_shape=shape) for key, data in chunks.items()}
    geometry = {(p.downsample, p.latent.shape[0], p.tile, p.n_channels) for p in parsed.values()}
    if not geometry:
        art = config.artifacts()
        geometry = {(art.downsample, art.latent_channels, config.tile, channels)}
    if len(geometry) != 1 or next(iter(geometry))[2:] != (config.tile, channels):
        raise TempocodecError(f"{where}: chunks disagree with each other or with the array on tile, channels or latent size")
    d, n_latent, (tile_rows, tile_cols), _ = geometry.pop()
    grid_rows, grid_cols = math.ceil(rows / d), math.ceil(cols / d)
    latent = np.full((n_latent, grid_rows, grid_cols), np.nan, dtype=np.float32)
    counts = np.zeros((grid_rows, grid_cols), dtype=np.int64)
    for (i, j), p in parsed.items():
        r0, c0 = i * tile_rows // d, j * tile_cols // d
        lat_rows, lat_cols = p.latent_extent
        nr, nc = min(lat_rows, grid_rows - r0), min(lat_cols, grid_cols - c0)
        inside = p.valid_channels()[: rows - i * tile_rows, : cols - j * tile_cols]
        counts[r0 : r0 + nr, c0 : c0 + nc] = _pool(inside, d)[:nr, :nc]
        latent[:, r0 : r0 + nr, c0 : c0 + nc] = p.latent[:, :nr, :nc]
    row_start, col_start = np.arange(grid_rows) * d, np.arange(grid_cols) * d
    row_stop, col_stop = np.minimum(row_start + d, rows), np.minimum(col_start + d, cols)
    block_pixels = np.outer(row_stop - row_start, col_stop - col_start)
    fraction = (counts / (block_pixels * channels)).astype(np.float32)
    latent[:, counts == 0] = np.nan
    return xr.DataArray(
        latent,
        dims=("latent_channel", "latent_row", "latent_col"),
        coords={
            "latent_channel": np.arange(n_latent),
            "latent_row": np.arange(grid_rows),
            "latent_col": np.arange(grid_cols),
            "pixel_row_start": ("latent_row", row_start),
            "pixel_row_stop": ("latent_row", row_stop),
            "pixel_col_start": ("latent_col", col_start),
            "pixel_col_stop": ("latent_col", col_stop),
            "valid_fraction": (("latent_row", "latent_col"), fraction),
        },
        name="latent",
        attrs={"model": config.model, "model_sha256": config.model_sha256, "downsample": d,
               "latent_dtype": config.latent_dtype},
    )
