"""The convolutional VAE for hyperspectral tiles (architecture and loss only; the training loop is in ``loop.py``).

Shapes: the encoder maps normalized radiance ``(N, n_channels, H, W)`` to a diagonal Gaussian posterior
``mean``, ``logvar`` of shape ``(N, latent_channels, H/d, W/d)`` with ``d = downsample``; the decoder maps a latent
``(N, latent_channels, h, w)`` back to ``(N, n_channels, d*h, d*w)``. Everything is convolutional, so H and W
only need to be multiples of ``downsample``.

Layout (after the paper's VAE, reshaped for CPU speed): a *spectral stem*, one 1×1 convolution
``n_channels -> widths[0]`` (initialisable from a PCA basis of normalized spectra), then spatial ResNet levels
(GroupNorm + GELU + 3×3 convolutions) joined by stride-2 convolutions down to the latent grid, self-attention at the
bottleneck and two latent heads. The decoder mirrors it with stride-2 transposed convolutions and ends with a
1×1 convolution ``widths[0] -> n_channels``. The loss is the L1 error divided by a learned scale (a Laplace
negative log-likelihood with a learned log-scale) plus a KL term with a small weight.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tempocodec.bands import N_CHANNELS
from tempocodec.errors import TempocodecError
from tempocodec.prepare.tiles import DOWNSAMPLE, TILE


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of the VAE.

    ``widths[i]`` is the channel count at spatial level ``i`` (level 0 is full resolution, each next level halves
    H and W), so ``downsample == 2 ** (len(widths) - 1)``. ``res_blocks[i]`` residual blocks run at level ``i`` in
    the encoder and in the decoder. ``groups`` is the largest GroupNorm group count (reduced to divide the width).
    """

    n_channels: int = N_CHANNELS
    latent_channels: int = 32
    widths: tuple[int, ...] = (64, 96, 128)
    res_blocks: tuple[int, ...] = (0, 1, 1)
    attention: bool = True
    groups: int = 8
    tile: int = TILE
    downsample: int = DOWNSAMPLE
    kl_weight: float = 1e-6
    logvar_clamp: tuple[float, float] = field(default=(-30.0, 20.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "res_blocks", tuple(int(r) for r in self.res_blocks))
        object.__setattr__(self, "logvar_clamp", tuple(float(v) for v in self.logvar_clamp))
        if self.n_channels < 1 or self.latent_channels < 1 or min(self.widths, default=0) < 1:
            raise TempocodecError(f"VAEConfig: channel counts must be positive, got {self}")
        if 2 ** (len(self.widths) - 1) != self.downsample:
            raise TempocodecError(
                f"VAEConfig: {len(self.widths)} widths give downsample {2 ** (len(self.widths) - 1)}, not {self.downsample}"
            )
        if len(self.res_blocks) != len(self.widths) or min(self.res_blocks) < 0:
            raise TempocodecError(f"VAEConfig: res_blocks {self.res_blocks} must give one count >= 0 per width")
        if self.tile % self.downsample:
            raise TempocodecError(f"VAEConfig: tile {self.tile} is not a multiple of downsample {self.downsample}")

    def to_dict(self) -> dict:
        """The config as JSON-able data (tuples become lists)."""
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise TempocodecError(f"VAEConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, GELU, 3×3 conv) twice, plus the identity; shape-preserving."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(channels, groups)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = _norm(channels, groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        h = self.conv2(F.gelu(self.norm2(h)))
        return x + h


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual connection; ``(N, C, h, w) -> (N, C, h, w)``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        weights = torch.softmax(torch.matmul(q.transpose(1, 2), k) * self.scale, dim=-1)  # (n, hw, hw)
        out = torch.matmul(v, weights.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.proj(out)


def _bottleneck(channels: int, config: VAEConfig) -> nn.Sequential:
    """The blocks at the latent resolution: ResBlock, optional attention, ResBlock."""
    layers: list[nn.Module] = [ResBlock(channels, config.groups)]
    if config.attention:
        layers.append(SelfAttention(channels, config.groups))
    layers.append(ResBlock(channels, config.groups))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Normalized radiance ``(N, n_channels, H, W)`` -> ``(mean, logvar)``, each ``(N, Z, H/d, W/d)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.stem = nn.Conv2d(config.n_channels, widths[0], 1)
        levels: list[nn.Module] = []
        for i, width in enumerate(widths):
            levels.extend(ResBlock(width, config.groups) for _ in range(config.res_blocks[i]))
            if i + 1 < len(widths):
                levels.append(nn.Conv2d(width, widths[i + 1], 3, stride=2, padding=1))
        self.levels = nn.Sequential(*levels)
        self.mid = _bottleneck(widths[-1], config)
        self.norm_out = _norm(widths[-1], config.groups)
        self.head = nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mid(self.levels(self.stem(x)))
        mean, logvar = self.head(F.gelu(self.norm_out(h))).chunk(2, dim=1)
        low, high = self.config.logvar_clamp
        return mean, torch.clamp(logvar, low, high)


class Decoder(nn.Module):
    """Latent ``(N, Z, h, w)`` -> normalized radiance ``(N, n_channels, d*h, d*w)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = config.widths
        self.head = nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1)
        self.mid = _bottleneck(widths[-1], config)
        levels: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            levels.extend(ResBlock(widths[i], config.groups) for _ in range(config.res_blocks[i]))
            if i > 0:
                levels.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1))
        self.levels = nn.Sequential(*levels)
        self.norm_out = _norm(widths[0], config.groups)
        self.out = nn.Conv2d(widths[0], config.n_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.levels(self.mid(self.head(z)))
        return self.out(F.gelu(self.norm_out(h)))


class VAE(nn.Module):
    """The VAE: :class:`Encoder`, :class:`Decoder` and the learned log-scale of the L1 likelihood."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.log_scale = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, H, W)`` normalized radiance -> posterior ``(mean, logvar)``, each ``(N, Z, H/d, W/d)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, Z, h, w)`` latent -> ``(N, C, d*h, d*w)`` normalized radiance."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct ``x``; returns ``(reconstruction, mean, logvar)``.

        The latent is sampled from the posterior when ``sample`` is true (default: in training mode), else the mean.
        """
        mean, logvar = self.encode(x)
        z = mean
        if self.training if sample is None else sample:
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.decode(z), mean, logvar

    def loss(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training loss of a batch ``x`` ``(N, C, H, W)``; ``mask`` ``(N, H, W)`` is true where pixels are valid.

        Returns scalar tensors: ``loss`` (the objective), ``l1`` (mean |error| over valid values, normalized units),
        ``nll`` (L1 divided by the learned scale plus the log-scale), ``kl`` (KL divergence in nats per tile,
        summed over the latent) and ``log_scale``. The KL enters the objective as ``kl_weight * kl`` divided by
        the number of input values per tile, which equals the paper's per-tile sum weighting.
        """
        recon, mean, logvar = self(x)
        recon, x = recon.float(), x.float()
        if mask is None or bool(mask.all()):
            l1 = F.l1_loss(recon, x)
        else:
            weight = mask.to(x.dtype).unsqueeze(1)
            l1 = ((recon - x) * weight).abs().sum() / (weight.sum() * x.shape[1]).clamp_min(1.0)
        nll = l1 * torch.exp(-self.log_scale) + self.log_scale
        kl = self.kl_per_channel(mean.float(), logvar.float()).sum(dim=1).mean()
        values_per_tile = x.shape[1] * x.shape[2] * x.shape[3]
        total = nll + self.config.kl_weight * kl / values_per_tile
        return {"loss": total, "l1": l1, "nll": nll, "kl": kl, "log_scale": self.log_scale.detach()}

    @staticmethod
    def kl_per_channel(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q || N(0, 1)) in nats per tile and latent channel: ``(N, Z, h, w)`` -> ``(N, Z)`` (summed over h, w)."""
        return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(dim=(2, 3))

    @torch.no_grad()
    def init_spectral_basis(self, basis: torch.Tensor) -> None:
        """Initialise the spectral stem and output layer from an orthonormal basis ``(widths[0], n_channels)``.

        Rows are spectral directions of normalized radiance (for example the leading PCA components); the stem
        projects onto them and the output layer maps back with the transpose. Biases are zeroed.
        """
        expected = (self.config.widths[0], self.config.n_channels)
        if tuple(basis.shape) != expected:
            raise TempocodecError(f"spectral basis has shape {tuple(basis.shape)}, expected {expected}")
        stem, out = self.encoder.stem, self.decoder.out
        assert stem.bias is not None and out.bias is not None  # both are made with bias=True
        basis = basis.to(stem.weight.dtype)
        stem.weight.copy_(basis[:, :, None, None])
        stem.bias.zero_()
        out.weight.copy_(basis.T[:, :, None, None])
        out.bias.zero_()

    def n_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
