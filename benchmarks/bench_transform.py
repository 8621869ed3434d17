"""Transform-coding baselines: rate–distortion of per-pixel PCA, a block KLT and tempocodec models on held-out granules.

These are the baselines a hyperspectral-compression engineer would write first. Every method compresses the
float32 radiance ``(mirror_step, xtrack, 1028)`` of one band of each held-out L1B granule (``--data``) and decodes
it back; ratio = float32 radiance bytes / stored bytes.

Methods:

- **PCA, global basis**: the normalized log spectrum ``x = clip((log max(L, 1) − μ) / σ, ±10)`` of each pixel (μ, σ:
  per-channel mean and standard deviation of log radiance over the ``--train`` granules) is projected on the
  leading K principal components (K in ``--ks``) of x, fitted on ``--train`` spectra. The basis and μ, σ are a
  fixed cost per dataset (like a model's weights) and are not counted.
- **PCA, per-granule basis**: the same x, the mean and K components fitted on the granule itself (a random
  sample of ``--fit-spectra`` valid pixels); mean and basis are stored as float32, ``(K + 1) × 1028 × 4`` bytes.
- **PCA, per-granule noise-normalised**: each channel of log radiance is divided by its median relative noise
  ``r`` (median over the granule of ``radiance_error / radiance``), so that the instrument noise has about unit
  variance in every channel before the PCA (as in the MNF transform); ``r``, the mean and the basis are stored as
  float32, ``(K + 2) × 1028 × 4`` bytes. Values invalid or below ``MIN_SIGNAL`` (never scored) take the channel mean.

  Each of the K principal-component images ``(mirror_step, xtrack)`` of the three PCA variants is coded by
  **SZ3** (``pysz``, absolute error bound ``e``) or by **uniform quantization + zstd** (step ``2e``, so the same
  maximum error ``e``; the smallest integer type that holds the indices, numcodecs Zstd; a 5-byte header per image).
  The bounds ``e`` (``--bounds``) are in units of x; in the noise-normalised space they are multiplied by the
  granule's median over channels of σ / r, so that one bound means about the same radiance error in both spaces.
- **PCA-10 + 4×4 block KLT-32**: the linear encoder with the VAE's latent size. The global PCA's first 10
  coefficients per pixel; per 4×4 block of pixels their 160 values are reduced to 32 by a KLT (principal
  components of such blocks of the ``--train`` granules), stored as float16: 32×16×16 numbers per 64×64 tile like
  the VAE, ~1028×. Both transforms are fitted on ``--train`` and not counted.
- **tempocodec models** (``--model NAME_OR_DIR``, repeatable): the codec kernel (``encode_tiles`` /
  ``decode_tiles``) on the model's tiles, float32 (~514×) and float16 (~1028×) latents, the whole payload counted.

Errors, over the values valid in the original and at least ``MIN_SIGNAL`` (the definitions of
:func:`tempocodec.evaluation.metrics.compare_arrays`; computed per setting by its cheaper parts ``spectrum_errors`` and
``used_values``, with the per-channel median noise from ``compare_arrays``, and checked against ``compare_arrays`` on
the block-KLT setting of each granule; ``compare_arrays``' histograms would cost seconds per setting on a full granule):

- **mean relative RMSE per spectrum**: RMS over channels of ``(L̂ − L) / L``, averaged over pixels (the paper's figure);
- **RMSE / noise**: the median over channels of the channel's RMSE over its median ``radiance_error``.

Speeds are MB/s of float32 radiance, measured in the same run, one pass per granule and setting. A PCA setting's
encode time adds the stages it runs: the transform (log, normalization and, per granule, the noise scale and the
basis fit), the projection on K components, and the coding of the K images; its decode time is one full decode.

Tables (``bench_transform_report``): every setting per granule (stdout), the errors at about 300×, 1000×, 2000× and
5000× per granule and over all granules (mean and worst granule). An error at a target ratio is interpolated (log
error against log ratio) on the granule's rate–distortion front of the method (the settings not beaten at once on
ratio and error); outside the front, the nearest front point within a factor ``NEAR`` of the target is taken and
marked "nearest". The tables and a plot (``--plots``/bench_transform.png: each method's front of its settings
averaged over granules) go between the markers of ``--out`` (text around them is kept). Run, with L1B training
granules that are not held out (for example ``python scripts/make_granule_sets.py probes TRAIN_DIR --scenes 12``):

    python benchmarks/bench_transform.py --data data/heldout --train TRAIN_DIR --model tempo-vae-uv

Small try: ``--ks 3,6 --granules 1 --out /tmp/b.md --plots /tmp/img``.
"""

from __future__ import annotations

import argparse
import itertools
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np
import pysz
import scipy.linalg
from bench_transform_report import (
    Point,
    averaged,
    generated_block,
    plot_rate_distortion,
    print_points,
    summary_table,
    write_markdown,
)

from tempocodec.codec.config import RADIANCE_FILL, CodecConfig, model_config
from tempocodec.codec.kernel import MAX_BATCH, decode_tiles, encode_tiles
from tempocodec.errors import TempocodecError
from tempocodec.evaluation.metrics import MIN_SIGNAL, compare_arrays, spectrum_errors, used_values
from tempocodec.granule.l1b import open_l1b
from tempocodec.prepare.normalize import LogStats, denormalize, is_valid, normalize
from tempocodec.prepare.tiles import cut_tiles, pixel_mask
from tempocodec.runtime.artifacts import ModelArtifacts, load_model, resolve_model

KS = (3, 4, 6, 8, 12, 16)
BOUNDS = (0.03, 0.1, 0.3, 1.0, 3.0)
BLOCK, BLOCK_PCS, BLOCK_DIMS = 4, 10, 32
ZSTD_LEVEL = 9
PASS = 4096  # spectra per pass when scoring (bounds the temporaries)
PLOT = "bench_transform.png"
Images = np.ndarray  # float32 (K, S, X): principal-component images


# --------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Granule:
    """One band of a granule: ``radiance`` and ``noise`` (its ``radiance_error``) float32 ``(S, X, C)`` in
    photons/s/cm²/nm/sr, ``wavelength`` ``(C,)`` nm (mean over xtrack), ``median_noise`` ``(C,)`` per channel as
    :func:`compare_arrays` takes it."""

    name: str
    radiance: np.ndarray
    noise: np.ndarray
    wavelength: np.ndarray
    median_noise: np.ndarray


def read_band(path: Path, band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``radiance``, ``radiance_error`` float32 ``(S, X, C)`` and nominal wavelength ``(X, C)`` of one band."""
    with open_l1b(path) as granule:
        data = granule.band(band)
        if "radiance_error" not in data:
            raise TempocodecError(f"{path}: {band} has no radiance_error")
        return (np.ascontiguousarray(data["radiance"].values), np.ascontiguousarray(data["radiance_error"].values),
                data["nominal_wavelength"].values.astype(np.float64))


def read_granule(path: Path, band: str) -> Granule:
    """The held-out granule at ``path``, with the per-channel median noise of :func:`compare_arrays`."""
    radiance, noise, wavelength = read_band(path, band)
    wl = wavelength.mean(axis=0)
    median_noise = compare_arrays(radiance, radiance, wl, noise).median_noise
    return Granule(path.name, radiance, noise, wl, median_noise)


def granule_paths(directory: Path) -> list[Path]:
    """The L1B granules under ``directory``, sorted by name."""
    return sorted(directory.rglob("TEMPO_RAD_L1_*.nc"))


# --------------------------------------------------------------------------------------------------- bases


@dataclass(frozen=True)
class Basis:
    """Mean ``(D,)`` and orthonormal principal directions ``(K, D)`` by decreasing variance, float32."""

    mean: np.ndarray
    components: np.ndarray


def principal_axes(samples: np.ndarray, k: int) -> Basis:
    """The mean and ``k`` leading principal directions of ``samples`` ``(N, D)`` (only those are computed, as an
    encoder fitting a basis per granule would)."""
    mean = samples.mean(axis=0, dtype=np.float64)
    centred = (samples - mean).astype(np.float32)
    d = centred.shape[1]
    _, vectors = scipy.linalg.eigh((centred.T @ centred).astype(np.float64) / len(samples), subset_by_index=(d - k, d - 1))
    return Basis(mean.astype(np.float32), np.ascontiguousarray(vectors[:, ::-1].T, np.float32))


def sample_pixels(values: np.ndarray, valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` random spectra ``(n, C)`` of ``values`` ``(S, X, C)`` where ``valid`` ``(S, X)``."""
    spectra = values[valid]
    return spectra[rng.permutation(len(spectra))[:n]]


def to_blocks(images: np.ndarray) -> np.ndarray:
    """``(S, X, P)`` -> ``(ceil(S/4) · ceil(X/4), 16 · P)``: the values of each 4×4 block (edges repeated)."""
    s, x, p = images.shape
    rows, cols = -(-s // BLOCK), -(-x // BLOCK)
    padded = np.pad(images, ((0, rows * BLOCK - s), (0, cols * BLOCK - x), (0, 0)), mode="edge")
    return padded.reshape(rows, BLOCK, cols, BLOCK, p).transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1)


def from_blocks(blocks: np.ndarray, shape: tuple[int, int], p: int) -> np.ndarray:
    """The inverse of :func:`to_blocks`: ``(n_blocks, 16 · p)`` -> ``(S, X, p)`` for ``shape`` = ``(S, X)``."""
    rows, cols = -(-shape[0] // BLOCK), -(-shape[1] // BLOCK)
    full = blocks.reshape(rows, cols, BLOCK, BLOCK, p).transpose(0, 2, 1, 3, 4).reshape(rows * BLOCK, cols * BLOCK, p)
    return full[: shape[0], : shape[1]]


@dataclass(frozen=True)
class Training:
    """What is fitted on ``--train``: log-radiance ``mu``, ``sigma`` ``(C,)``, the global PCA ``pca`` of x and the
    block KLT ``block`` (``(BLOCK_DIMS, 16 · BLOCK_PCS)``) of 4×4 blocks of its first ``BLOCK_PCS`` coefficients."""

    mu: np.ndarray
    sigma: np.ndarray
    pca: Basis
    block: Basis
    granules: int
    spectra: int
    blocks: int


def fit_training(paths: list[Path], band: str, k: int, spectra: int, blocks: int, seed: int) -> Training:
    """Two passes over the training granules: μ, σ and ``spectra`` spectra per granule for the global PCA (``k``
    components), then up to ``blocks`` fully valid 4×4 blocks per granule for the block KLT."""
    rng, stats, samples = np.random.default_rng(seed), None, []
    for path in paths:
        radiance = read_band(path, band)[0]
        stats = (stats or LogStats(radiance.shape[-1])).update(radiance)
        samples.append(sample_pixels(radiance, pixel_mask(radiance), spectra, rng))
    mu, sigma = stats.result()
    pca = principal_axes(normalize(np.concatenate(samples), mu, sigma), k)
    block_samples = []
    for path in paths:
        radiance = read_band(path, band)[0]
        coefficients = project(normalize(radiance, mu, sigma), pca, BLOCK_PCS).transpose(1, 2, 0)
        valid = to_blocks(pixel_mask(radiance)[..., None].astype(np.float32)).min(axis=1) == 1
        chosen = to_blocks(coefficients)[valid]
        block_samples.append(chosen[rng.permutation(len(chosen))[:blocks]])
    block = principal_axes(np.concatenate(block_samples), BLOCK_DIMS)
    return Training(mu, sigma, pca, block, len(paths), sum(map(len, samples)), sum(map(len, block_samples)))


def project(values: np.ndarray, basis: Basis, k: int) -> Images:
    """The first ``k`` principal-component images ``(k, S, X)`` of ``values`` ``(S, X, C)``."""
    s, x, c = values.shape
    coefficients = (values.reshape(-1, c) - basis.mean) @ basis.components[:k].T
    return np.ascontiguousarray(coefficients.T.reshape(k, s, x))


def expand(images: Images, basis: Basis) -> np.ndarray:
    """The inverse of :func:`project`: ``(k, S, X)`` -> values ``(S, X, C)`` in the span of ``k`` components."""
    k, s, x = images.shape
    return (images.reshape(k, -1).T @ basis.components[:k] + basis.mean).reshape(s, x, -1)


# --------------------------------------------------------------------------------------------------- PCA spaces


@dataclass(frozen=True)
class Space:
    """A granule in a PCA variant's space: ``values`` float32 ``(S, X, C)`` with log radiance ``offset + scale ·
    values``; ``basis`` with ``max(--ks)`` components; ``stored_vectors``: float32 ``(C,)`` vectors stored besides
    the basis rows (None: basis not stored); ``bound_scale``: the factor applied to the bounds."""

    values: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    basis: Basis
    stored_vectors: int | None
    bound_scale: float

    def side_bytes(self, k: int) -> int:
        """Bytes of side information stored with ``k`` components."""
        c = self.values.shape[-1]
        return 0 if self.stored_vectors is None else 4 * c * (self.stored_vectors + k)

    def radiance(self, images: Images) -> np.ndarray:
        """Decoded radiance float32 ``(S, X, C)`` from the principal-component images."""
        return denormalize(expand(images, self.basis), self.offset, self.scale)


def relative_noise(granule: Granule) -> np.ndarray:
    """Median over the granule of ``radiance_error / radiance`` per channel ``(C,)``, over usable values."""
    c = granule.radiance.shape[-1]
    radiance, noise = granule.radiance.reshape(-1, c), granule.noise.reshape(-1, c)
    usable = is_valid(radiance) & (radiance >= MIN_SIGNAL) & is_valid(noise) & (noise > 0)
    ratio = np.where(usable, noise / np.where(usable, radiance, 1), np.nan)
    return np.nanmedian(ratio, axis=0).astype(np.float32)


def noise_scaled(radiance: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``log(L) / r`` float32 ``(S, X, C)`` for noise scale ``r`` ``(C,)``; values that are invalid or below
    ``MIN_SIGNAL`` (never scored) take their channel's mean, so that they neither pull the PCA nor add to the PCs."""
    usable = is_valid(radiance) & (radiance >= MIN_SIGNAL)
    y = np.log(np.where(usable, radiance, np.float32(1))) / r
    mean = y.sum(axis=(0, 1), dtype=np.float64) / np.maximum(usable.sum(axis=(0, 1)), 1)
    return np.where(usable, y, mean.astype(np.float32))


def make_space(variant: str, granule: Granule, train: Training, k: int, fit_spectra: int) -> Space:
    """The ``variant`` ("global", "granule" or "noise") space of ``granule``, its basis fitted when per granule."""
    radiance = granule.radiance
    valid = pixel_mask(radiance)
    rng = np.random.default_rng(0)
    if variant in ("global", "granule"):
        x = normalize(radiance, train.mu, train.sigma)
        basis = train.pca if variant == "global" else principal_axes(sample_pixels(x, valid, fit_spectra, rng), k)
        return Space(x, train.mu, train.sigma, basis, None if variant == "global" else 1, 1.0)
    r = relative_noise(granule)
    y = noise_scaled(radiance, r)
    basis = principal_axes(sample_pixels(y, valid, fit_spectra, rng), k)
    return Space(y, np.zeros_like(r), r, basis, 2, float(np.median(train.sigma / r)))


# --------------------------------------------------------------------------------------------------- coders


Coder = tuple[Callable[[Images], list[bytes]], Callable[[list[bytes], tuple[int, ...]], Images]]


def sz3_coder(bound: float) -> Coder:
    """SZ3 with absolute error bound ``bound`` on each image."""
    config = pysz.szConfig()
    config.errorBoundMode = pysz.szErrorBoundMode.ABS
    config.absErrorBound = bound

    def encode(images: Images) -> list[bytes]:
        return [pysz.sz.compress(np.ascontiguousarray(image), config)[0].tobytes() for image in images]

    def decode(blobs: list[bytes], shape: tuple[int, ...]) -> Images:
        return np.stack([pysz.sz.decompress(np.frombuffer(b, np.uint8), np.float32, shape[1:])[0].reshape(shape[1:])
                         for b in blobs])

    return encode, decode


INT_TYPES = (np.int8, np.int16, np.int32)


def quantizing_coder(bound: float) -> Coder:
    """Uniform quantization with step ``2 · bound``, indices in the smallest integer type, then zstd; each image's
    blob starts with its step (float32) and the type's index (1 byte)."""
    step, zstd = np.float32(2 * bound), numcodecs.Zstd(level=ZSTD_LEVEL)

    def encode(images: Images) -> list[bytes]:
        blobs = []
        for image in images:
            q = np.rint(image / step)
            code = next(i for i, t in enumerate(INT_TYPES) if np.abs(q).max(initial=0) < np.iinfo(t).max)
            blobs.append(struct.pack("<fB", step, code) + zstd.encode(q.astype(INT_TYPES[code])))
        return blobs

    def decode(blobs: list[bytes], shape: tuple[int, ...]) -> Images:
        out = np.empty(shape, np.float32)
        for image, blob in zip(out, blobs, strict=True):
            blob_step, code = struct.unpack("<fB", blob[:5])
            image[...] = np.frombuffer(zstd.decode(blob[5:]), INT_TYPES[code]).reshape(shape[1:]) * blob_step
        return out

    return encode, decode


CODERS = {"SZ3": sz3_coder, "quant+zstd": quantizing_coder}
VARIANTS = {"global": "PCA global", "granule": "PCA per-granule", "noise": "PCA noise-normalised"}


# --------------------------------------------------------------------------------------------------- measuring


def score(granule: Granule, decoded: np.ndarray) -> tuple[float, float]:
    """Mean relative RMSE per spectrum and median over channels of RMSE / median noise of ``decoded`` ``(S, X, C)``,
    with :func:`compare_arrays`' definitions (used values: valid in the original, ≥ MIN_SIGNAL, valid decoded)."""
    c = granule.radiance.shape[-1]
    original, decoded = granule.radiance.reshape(-1, c), decoded.reshape(-1, c)
    sum_sq, count = np.zeros(c), np.zeros(c)
    for start in range(0, len(original), PASS):
        o, d = original[start:start + PASS], decoded[start:start + PASS]
        used, _ = used_values(o, d)
        error = np.where(used, d - o, np.float32(0))
        sum_sq += np.einsum("pc,pc->c", error, error, dtype=np.float64)
        count += used.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        noise_ratio = np.sqrt(sum_sq / count) / granule.median_noise
    return float(np.nanmean(spectrum_errors(original, decoded)[0])), float(np.nanmedian(noise_ratio))


def check_score(granule: Granule, decoded: np.ndarray, got: tuple[float, float]) -> None:
    """Raise unless :func:`score` agrees with :func:`compare_arrays` on ``decoded``."""
    metrics = compare_arrays(granule.radiance, decoded, granule.wavelength, granule.noise)
    expected = (metrics.mean_relative_rmse, float(np.nanmedian(metrics.noise_ratio)))
    if not np.allclose(got, expected, rtol=1e-4):
        raise TempocodecError(f"{granule.name}: errors {got} differ from compare_arrays' {expected}")


def timed(function: Callable, *args) -> tuple[object, float]:
    """``function(*args)`` and its wall time in seconds."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def point(granule: Granule, family: str, setting: str, stored: int, encode_s: float, decoded: np.ndarray,
          decode_s: float, check: bool = False) -> Point:
    """Score ``decoded`` (and, with ``check``, compare the scores with :func:`compare_arrays`'); record the setting."""
    rrmse, noise = score(granule, decoded)
    if check:
        check_score(granule, decoded, (rrmse, noise))
    return Point(granule.name, family, setting, granule.radiance.nbytes, stored, encode_s, decode_s, rrmse, noise)


def coded_point(granule: Granule, space: Space, images: Images, coder: Coder, family: str, setting: str,
                transform_s: float) -> Point:
    """Code the PC images ``images`` with ``coder``, decode them to radiance and score it (``transform_s``: the
    encoder's seconds before coding)."""
    encode, decode = coder
    blobs, code_s = timed(encode, images)
    start = time.perf_counter()
    decoded = space.radiance(decode(blobs, images.shape))
    decode_s = time.perf_counter() - start
    stored = sum(map(len, blobs)) + space.side_bytes(len(images))
    return point(granule, family, setting, stored, transform_s + code_s, decoded, decode_s)


def pca_points(granule: Granule, variant: str, train: Training, ks: list[int], bounds: list[float],
               fit_spectra: int) -> list[Point]:
    """Every (K, coder, bound) setting of one PCA variant on one granule."""
    space, space_s = timed(make_space, variant, granule, train, max(ks), fit_spectra)
    points = []
    for k in ks:
        images, project_s = timed(project, space.values, space.basis, k)
        for (name, make_coder), bound in itertools.product(CODERS.items(), bounds):
            points.append(coded_point(granule, space, images, make_coder(bound * space.bound_scale),
                                      f"{VARIANTS[variant]} + {name}", f"K={k}, e={bound:g}", space_s + project_s))
    return points


def block_klt_point(granule: Granule, train: Training) -> Point:
    """The PCA-10 + 4×4 block KLT-32 linear encoder, float16 coefficients."""
    shape = granule.radiance.shape[:2]

    def encode(radiance: np.ndarray) -> bytes:
        coefficients = project(normalize(radiance, train.mu, train.sigma), train.pca, BLOCK_PCS).transpose(1, 2, 0)
        return ((to_blocks(coefficients) - train.block.mean) @ train.block.components.T).astype(np.float16).tobytes()

    def decode(blob: bytes) -> np.ndarray:
        reduced = np.frombuffer(blob, np.float16).reshape(-1, BLOCK_DIMS).astype(np.float32)
        coefficients = from_blocks(reduced @ train.block.components + train.block.mean, shape, BLOCK_PCS)
        return denormalize(expand(np.ascontiguousarray(coefficients.transpose(2, 0, 1)), train.pca), train.mu, train.sigma)

    blob, encode_s = timed(encode, granule.radiance)
    decoded, decode_s = timed(decode, blob)
    family = f"PCA-{BLOCK_PCS} + {BLOCK}×{BLOCK} block KLT-{BLOCK_DIMS}"
    return point(granule, family, "float16", len(blob), encode_s, decoded, decode_s, check=True)


def kernel_coder(art: ModelArtifacts, latent_dtype: str, shape: tuple[int, int, int]) -> tuple[Callable, Callable]:
    """The codec kernel on the model's tiles of radiance ``shape`` ``(S, X, C)`` (edge tiles padded with the
    fill): ``encode(radiance) -> payloads``, ``decode(payloads) -> radiance``."""
    config, tile = CodecConfig.parse(**model_config(art, latent_dtype)), art.tile

    def encode(radiance: np.ndarray) -> list[bytes]:
        tiles = cut_tiles(radiance, tile=tile, min_valid=0.0).radiance
        batches = [tiles[start:start + MAX_BATCH] for start in range(0, len(tiles), MAX_BATCH)]
        return [blob for batch in batches for blob in encode_tiles(batch, [RADIANCE_FILL] * len(batch), config)]

    def decode(blobs: list[bytes]) -> np.ndarray:
        out, cols = np.empty(shape, np.float32), -(-shape[1] // tile)
        for start in range(0, len(blobs), MAX_BATCH):
            batch = blobs[start:start + MAX_BATCH]
            for n, decoded in enumerate(decode_tiles(batch, [RADIANCE_FILL] * len(batch), config), start):
                s, x = (n // cols) * tile, (n % cols) * tile
                part = out[s:s + tile, x:x + tile]
                part[...] = decoded[: part.shape[0], : part.shape[1]]
        return out

    return encode, decode


def model_points(granule: Granule, art: ModelArtifacts) -> list[Point]:
    """The codec kernel with float32 and float16 latents, the whole payloads counted."""
    points = []
    for latent_dtype in ("float32", "float16"):
        encode, decode = kernel_coder(art, latent_dtype, granule.radiance.shape)
        encode(granule.radiance[: art.tile, : art.tile])  # warm-up: ONNX Runtime sessions, untimed
        blobs, encode_s = timed(encode, granule.radiance)
        decoded, decode_s = timed(decode, blobs)
        points.append(point(granule, f"model {art.name}", f"{latent_dtype} latents", sum(map(len, blobs)),
                            encode_s, decoded, decode_s))
    return points


# --------------------------------------------------------------------------------------------------- main


def numbers(parser: argparse.ArgumentParser, option: str, text: str, kind: type) -> list:
    """The positive numbers of a comma-separated option value (``parser.error`` otherwise)."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        parser.error(f"{option}: expected positive numbers separated by commas, got {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    """The command line; ``ks`` and ``bounds`` become lists."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out L1B granules")
    parser.add_argument("--train", type=Path, required=True, help="L1B granules to fit the global bases on")
    parser.add_argument("--band", default="band_290_490_nm")
    parser.add_argument("--model", action="append", default=[], help="tempocodec model name or directory (repeatable)")
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="PCA component counts")
    parser.add_argument("--bounds", default=",".join(map(str, BOUNDS)), help="absolute error bounds, units of x")
    parser.add_argument("--granules", type=int, default=None, help="held-out granules to use (first by name)")
    parser.add_argument("--train-granules", type=int, default=12, help="training granules (spread by name)")
    parser.add_argument("--train-spectra", type=int, default=4000, help="spectra per training granule for the PCA")
    parser.add_argument("--train-blocks", type=int, default=2000, help="4×4 blocks per training granule for the KLT")
    parser.add_argument("--fit-spectra", type=int, default=16384, help="spectra for a per-granule basis")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--plots", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.ks, args.bounds = numbers(parser, "--ks", args.ks, int), numbers(parser, "--bounds", args.bounds, float)
    return args


def measure_granule(path: Path, args: argparse.Namespace, train: Training, models: list[ModelArtifacts]) -> list[Point]:
    """Every method and setting on the held-out granule at ``path``."""
    granule = read_granule(path, args.band)
    points = [p for variant in VARIANTS for p in pca_points(granule, variant, train, args.ks, args.bounds, args.fit_spectra)]
    points.append(block_klt_point(granule, train))
    return points + [p for art in models for p in model_points(granule, art)]


def notes(args: argparse.Namespace, held: list[Path], train: Training, models: list[ModelArtifacts]) -> list[str]:
    """The bullets on data and settings for the generated block."""
    with open_l1b(held[0]) as first:
        shape = first.band(args.band)["radiance"].shape
    return [f"Data: {len(held)} granules from `{args.data}`, `{args.band}`, {'×'.join(map(str, shape))} (the first).",
            (f"Fitted on {train.granules} granules from `{args.train}`: μ, σ on all their values, the global PCA on "
             f"{train.spectra:,} spectra, the block KLT on {train.blocks:,} 4×4 blocks. Per-granule bases: up to "
             f"{args.fit_spectra:,} spectra."),
            f"Settings: K in {args.ks}; bounds e in {args.bounds} (units of x, scaled by σ / r in the noise-normalised space).",
            "Models: " + (", ".join(f"`{a.name}` (sha256 {a.sha256[:12]}…)" for a in models) or "none") + "."]


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    held, training = granule_paths(args.data)[: args.granules], granule_paths(args.train)
    if not held or not training:
        raise TempocodecError(f"no TEMPO_RAD_L1_*.nc granules under {args.data if not held else args.train}")
    training = training[:: max(1, len(training) // args.train_granules)][: args.train_granules]
    models = [load_model(resolve_model(m)) for m in args.model]
    print(f"fitting on {len(training)} training granules …", file=sys.stderr)
    train = fit_training(training, args.band, max(max(args.ks), BLOCK_PCS), args.train_spectra, args.train_blocks, 0)
    points: list[Point] = []
    for n, path in enumerate(held, 1):
        mine, seconds = timed(measure_granule, path, args, train, models)
        print(f"[{n}/{len(held)}] {path.name}: {len(mine)} settings in {seconds:.0f} s", file=sys.stderr)
        print(f"\n{path.name}")
        print_points(mine)
        points += mine
    plot = args.plots / PLOT
    plot_rate_distortion(averaged(points), plot)
    minutes = (time.perf_counter() - started) / 60
    write_markdown(args.out, generated_block(points, notes(args, held, train, models), args, plot, minutes))
    print("\n" + "\n".join(summary_table(points, len(held))))


if __name__ == "__main__":
    try:
        main()
    except TempocodecError as error:
        sys.exit(f"bench_transform: {error}")
