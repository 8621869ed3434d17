"""Reconstruction metrics of a trained model on the validation granules: the ``validation`` part of a run summary.

The errors come from the evaluation's engine (:class:`tempocodec.evaluation.metrics.SpectraAccumulator`, its
definitions and signal floor), on the model's decoded tiles and on the mean spectrum ``exp(mu)`` as a baseline;
beside them, the KL per latent channel and the differential (band) structure in :data:`WINDOWS_NM`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tempocodec.errors import TempocodecError
from tempocodec.evaluation.metrics import (
    SpectraAccumulator,
    spectrum_errors,
    used_values,
)
from tempocodec.prepare.normalize import normalize
from tempocodec.prepare.tiles import cut_tiles
from tempocodec.training.config import TrainConfig
from tempocodec.training.data import iter_blocks
from tempocodec.training.loop import autocast
from tempocodec.training.vae import VAE

KL_ACTIVE_NATS = 0.01  # a latent channel is active above this mean KL per latent cell (nats)
STRUCTURE_RATIO = 0.5  # band structure counts as lost when the model's error exceeds this share of the mean's
WINDOWS_NM = {"NO2_405_465": (405.0, 465.0), "O3_310_330": (310.0, 330.0)}


@torch.no_grad()
def validation_metrics(model: VAE, paths: list[Path], config: TrainConfig, mu: np.ndarray, sigma: np.ndarray,
                       wavelength: np.ndarray | None) -> dict:
    """Reconstruction metrics of ``model`` on the tiles of ``paths``, against the radiance read from the files.

    Over the valid pixels of each tile and the values the engine uses (valid, ``L >= 1``, decoded valid): the
    relative error ``(L_hat - L) / L`` per channel, the mean of its absolute value and its median (from the
    engine's histograms, within 2.3 %); the relative RMSE per spectrum, averaged over pixels (also for the
    mean-spectrum predictor ``exp(mu)``); ``decoded_fill``, the values decoded as invalid. KL per latent channel
    in nats per tile. Spectral structure: RMS error of the log spectrum after removing a quadratic in wavelength,
    in the NO2 (405-465 nm) and O3 (310-330 nm) windows, for the model and for the mean spectrum.
    """
    vae_config = model.config
    cells = (vae_config.tile // vae_config.downsample) ** 2
    metrics = ValidationMetrics(mu, wavelength, vae_config.latent_channels, cells)
    model.eval()
    for path in paths:
        for start, block in iter_blocks(path, config.band, vae_config.tile):
            tiles = cut_tiles(block, vae_config.tile, config.min_valid, step_offset=start)
            for radiance, mask in zip(tiles.radiance, tiles.mask, strict=True):
                recon, kl = _reconstruct(model, radiance, mu, sigma)
                metrics.add(radiance, recon, mask, kl)
    return metrics.result()


def _reconstruct(model: VAE, radiance: np.ndarray, mu: np.ndarray,
                 sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's decoded radiance of one tile ``(T, T, C)`` (posterior mean, no sampling) as float32 numpy
    ``(T, T, C)``, and its KL per latent channel ``(Z,)`` in nats."""
    device = next(model.parameters()).device
    sigma_t, mu_t = torch.from_numpy(sigma).to(device), torch.from_numpy(mu).to(device)
    x = torch.from_numpy(np.ascontiguousarray(normalize(radiance, mu, sigma).transpose(2, 0, 1)))
    with autocast(device):
        recon, mean, logvar = model(x[None].to(device), sample=False)
    recon_radiance = torch.exp(recon[0].float().permute(1, 2, 0) * sigma_t + mu_t).cpu().numpy()
    kl = model.kl_per_channel(mean.float(), logvar.float())[0].cpu().numpy()
    return recon_radiance, kl


class ValidationMetrics:
    """Streams validation tiles into the summary's metrics: ``add`` each tile, then ``result``."""

    def __init__(self, mu: np.ndarray, wavelength: np.ndarray | None, latent_channels: int,
                 latent_cells: int) -> None:
        """``mu`` ``(C,)``: mean log radiance (the mean spectrum is ``exp(mu)``); ``wavelength`` ``(C,)`` nm or
        None; ``latent_cells``: latent cells per tile."""
        c = len(mu)
        self.latent_cells = latent_cells
        self.mu, self.wavelength = mu.astype(np.float64), wavelength
        self.errors = SpectraAccumulator(c)
        self.per_spectrum: list[tuple[np.ndarray, np.ndarray]] = []  # relative RMSE, spectral angle
        self.rrmse_mean_predictor: list[np.ndarray] = []
        self.kl_sum, self.tiles = np.zeros(latent_channels), 0
        # per window: RMS differential errors of the model and of the mean spectrum, one array per tile
        self.structure: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {name: ([], []) for name in WINDOWS_NM}

    def add(self, truth: np.ndarray, recon: np.ndarray, pixel_mask: np.ndarray, kl: np.ndarray) -> None:
        """One tile: radiance ``truth``, ``recon`` ``(T, T, C)``, ``pixel_mask`` ``(T, T)``, ``kl`` ``(Z,)`` nats."""
        self.kl_sum += kl
        self.tiles += 1
        spectra, recon = truth[pixel_mask], recon[pixel_mask]
        self.per_spectrum.append(self.errors.add(spectra, recon))
        mean = np.broadcast_to(np.exp(self.mu), spectra.shape)
        self.rrmse_mean_predictor.append(spectrum_errors(spectra, mean)[0])
        if self.wavelength is not None:
            self._add_structure(spectra, recon, self.wavelength)

    def _add_structure(self, spectra: np.ndarray, recon: np.ndarray, wavelength: np.ndarray) -> None:
        """RMS error of the differential log spectrum in each window, for the model and the mean spectrum, over
        the spectra ``(P, C)`` whose values in the window are all used; ``wavelength`` ``(C,)`` nm."""
        used, _ = used_values(spectra, recon)
        for name, (low, high) in WINDOWS_NM.items():
            channels = (wavelength >= low) & (wavelength <= high)
            rows = used[:, channels].all(axis=1) & (recon[:, channels] > 0).all(axis=1)
            if channels.sum() < 4 or not rows.any():
                continue
            wl = wavelength[channels]
            truth_d = _differential(np.log(spectra[rows][:, channels].astype(np.float64)), wl)
            model_d = _differential(np.log(recon[rows][:, channels].astype(np.float64)), wl)
            mean_d = _differential(self.mu[channels][None, :], wl)
            self.structure[name][0].append(np.sqrt(np.mean((model_d - truth_d) ** 2, axis=1)))
            self.structure[name][1].append(np.sqrt(np.mean((mean_d - truth_d) ** 2, axis=1)))

    def result(self) -> dict:
        """The metrics as JSON-able data."""
        if self.tiles == 0 or not self.errors.count.any():
            raise TempocodecError("evaluation: no validation tile with valid pixels")
        rrmse, angle = (np.concatenate(values) for values in zip(*self.per_spectrum, strict=True))
        wavelength = np.full(len(self.mu), np.nan) if self.wavelength is None else self.wavelength
        model = self.errors.result(wavelength, rrmse, angle)
        mean = np.concatenate(self.rrmse_mean_predictor)
        kl = self.kl_sum / self.tiles
        result = {
            "tiles": self.tiles,
            "pixels": model.pixels,
            "decoded_fill": model.decoded_fill,
            "relative_error_mean_per_channel": _rounded(model.mean_abs_relative_error),
            "relative_error_median_per_channel": _rounded(model.median_relative_error),
            "relative_rmse_per_spectrum": {"mean": model.mean_relative_rmse, "median": model.median_relative_rmse},
            "relative_rmse_per_spectrum_mean_predictor": {"mean": float(np.nanmean(mean)),
                                                          "median": float(np.nanmedian(mean))},
            "kl_per_latent_channel": _rounded(kl),
            "active_latent_channels": int((kl > KL_ACTIVE_NATS * self.latent_cells).sum()),
            "wavelength_nm": None if self.wavelength is None else _rounded(self.wavelength),
        }
        result["posterior_collapse"] = result["active_latent_channels"] == 0
        result["spectral_structure"] = self._structure_result()
        return result

    def _structure_result(self) -> dict:
        """Per window: median RMS differential error of the model and of the mean spectrum, their ratio, and
        ``structure_lost`` when the ratio exceeds 0.5 (the model does not resolve the band structure: smoothing or
        spurious structure)."""
        out: dict[str, dict[str, object] | None] = {}
        for name, (model_err, mean_err) in self.structure.items():
            if not model_err:
                out[name] = None
                continue
            model_median = float(np.median(np.concatenate(model_err)))
            mean_median = float(np.median(np.concatenate(mean_err)))
            ratio = model_median / mean_median if mean_median > 0 else float("nan")
            out[name] = {"window_nm": list(WINDOWS_NM[name]), "model_rms_log_error": model_median,
                         "mean_spectrum_rms_log_error": mean_median, "ratio": ratio,
                         "structure_lost": bool(ratio > STRUCTURE_RATIO)}
        return out


def _differential(log_spectra: np.ndarray, wavelength: np.ndarray) -> np.ndarray:
    """``(P, W)`` log spectra minus their least-squares quadratic in wavelength: the absorption band structure."""
    t = (wavelength - wavelength.mean()) / max(np.ptp(wavelength), 1e-9)
    design = np.stack([np.ones_like(t), t, t * t], axis=1)
    coef, *_ = np.linalg.lstsq(design, log_spectra.T, rcond=None)
    return log_spectra - (design @ coef).T


def _rounded(values: np.ndarray) -> list[float | None]:
    """A float array as a list with 6 significant digits (NaN becomes None)."""
    return [None if not np.isfinite(v) else float(f"{v:.6g}") for v in np.asarray(values, np.float64)]
