"""The basis-block VAE: a fixed spectral basis, then a block transform with a learned non-linear correction.

Shapes: the encoder maps normalized radiance ``(N, C, H, W)`` to a diagonal Gaussian posterior ``mean``,
``logvar`` ``(N, Z, H/d, W/d)``; the decoder maps ``(N, Z, h, w)`` back to ``(N, C, d*h, d*w)``. Inside:

1. a frozen 1×1 projection onto ``K`` whitened principal components of log radiance
   (:class:`tempocodec.prepare.basis.SpectralBasis`): the network never sees 1028 channels;
2. space-to-depth by ``d``: every ``d×d`` block of coefficients becomes one vector of ``D = K·d²`` values on the
   latent grid, so every layer after it runs at latent resolution (cheap on a CPU);
3. the latent mean = a linear block transform (1×1 convolution ``D -> Z``, initialised from the block KLT, i.e. the
   linear encoder of the same size) + a residual network of 3×3 convolutions over neighbouring blocks whose last
   layer starts at zero. The decoder mirrors it. At initialisation the model *is* the linear block transform, and
   training only moves it where the loss improves.

The loss (:meth:`BlockVAE.loss`) is the paper's figure on the training data: the mean over valid pixels of the
per-pixel RMS log-radiance error (≈ relative RMSE per spectrum) within the basis, plus a small KL term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tempocodec.bands import N_CHANNELS
from tempocodec.errors import TempocodecError
from tempocodec.prepare.basis import SpectralBasis


@dataclass(frozen=True)
class BlockVAEConfig:
    """Sizes: ``n_channels`` C, ``basis_components`` K, ``latent_channels`` Z, ``downsample`` d, ``hidden`` width
    of the residual networks, ``depth`` 3×3 layers in each, ``tile`` the codec's chunk side in pixels."""

    n_channels: int = N_CHANNELS
    basis_components: int = 24
    latent_channels: int = 32
    downsample: int = 4
    hidden: int = 192
    depth: int = 3
    tile: int = 64
    kl_weight: float = 1e-6
    logvar_init: float = -12.0

    def __post_init__(self) -> None:
        sizes = (self.n_channels, self.basis_components, self.latent_channels, self.downsample, self.hidden, self.depth)
        if min(sizes) < 1 or self.basis_components > self.n_channels or self.tile % self.downsample:
            raise TempocodecError(f"BlockVAEConfig: inconsistent sizes {self}")

    @property
    def block(self) -> int:
        """``D = K·d²``: values per latent cell before the block transform."""
        return self.basis_components * self.downsample**2

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden width, for the model card's architecture line."""
        return (self.hidden,)

    def to_dict(self) -> dict:
        """The config as JSON-able data, tagged with its architecture."""
        return {"architecture": "block", **asdict(self)}


def _residual_net(inputs: int, hidden: int, outputs: int, depth: int) -> nn.Sequential:
    """1×1 in, ``depth`` (3×3 conv, GELU) layers, 1×1 out starting at zero: a correction that is 0 at init."""
    layers: list[nn.Module] = [nn.Conv2d(inputs, hidden, 1), nn.GELU()]
    for _ in range(depth):
        layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU()]
    out = nn.Conv2d(hidden, outputs, 1)
    for param in out.parameters():  # weight and bias
        nn.init.zeros_(param)
    return nn.Sequential(*layers, out)


class BlockVAE(nn.Module):
    """See the module docstring. Buffers ``project`` ``(K, C)``, ``expand`` ``(C, K)``, ``scales`` ``(K,)``."""

    project: torch.Tensor
    expand: torch.Tensor
    scales: torch.Tensor

    def __init__(self, config: BlockVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or BlockVAEConfig()
        self.register_buffer("project", torch.zeros(cfg.basis_components, cfg.n_channels))
        self.register_buffer("expand", torch.zeros(cfg.n_channels, cfg.basis_components))
        self.register_buffer("scales", torch.ones(cfg.basis_components))
        self.enc_linear = nn.Conv2d(cfg.block, cfg.latent_channels, 1)
        self.enc_residual = _residual_net(cfg.block, cfg.hidden, cfg.latent_channels, cfg.depth)
        self.enc_logvar = nn.Conv2d(cfg.block, cfg.latent_channels, 1)
        assert self.enc_logvar.bias is not None  # made with bias=True
        nn.init.zeros_(self.enc_logvar.weight)
        nn.init.constant_(self.enc_logvar.bias, cfg.logvar_init)
        self.dec_linear = nn.Conv2d(cfg.latent_channels, cfg.block, 1)
        self.dec_residual = _residual_net(cfg.latent_channels, cfg.hidden, cfg.block, cfg.depth)

    # ---- the fixed and the linear parts
    def set_spectral_basis(self, basis: SpectralBasis) -> None:
        """Install the frozen basis maps :attr:`SpectralBasis.project`, ``.expand`` and ``.scales``."""
        k, c = self.config.basis_components, self.config.n_channels
        if basis.components.shape != (k, c):
            raise TempocodecError(f"spectral basis {basis.components.shape} does not fit K={k}, C={c}")
        with torch.no_grad():
            self.project.copy_(torch.from_numpy(basis.project))
            self.expand.copy_(torch.from_numpy(basis.expand))
            self.scales.copy_(torch.from_numpy(basis.scales.astype(np.float32)))

    @torch.no_grad()
    def init_block_transform(self, coefficients: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """Set the linear paths to the block KLT of ``coefficients`` ``(N, K, H, W)`` (cells fully inside ``mask``
        ``(N, H, W)``): the top ``Z`` principal directions of the ``D``-vectors. Returns their explained share."""
        blocks = F.pixel_unshuffle(coefficients, self.config.downsample)  # (N, D, h, w), D index = k·d² + pixel
        full = F.avg_pool2d(mask[:, None].float(), self.config.downsample)[:, 0] > 0.999
        # in log-radiance units (unwhitened), so the KLT keeps what matters for the radiance error
        unit = self.scales.double().repeat_interleave(self.config.downsample**2)  # (D,)
        vectors = blocks.permute(0, 2, 3, 1)[full].double() * unit
        mean = vectors.mean(0)
        values, basis = torch.linalg.eigh(torch.cov((vectors - mean).T))
        top = basis[:, torch.argsort(values, descending=True)[: self.config.latent_channels]].T  # (Z, D)
        assert self.enc_linear.bias is not None and self.dec_linear.bias is not None  # made with bias=True
        self.enc_linear.weight.copy_((top * unit)[:, :, None, None].float())
        self.enc_linear.bias.copy_((-top @ mean).float())
        self.dec_linear.weight.copy_((top.T / unit[:, None])[:, :, None, None].float())
        self.dec_linear.bias.copy_((mean / unit).float())
        return (torch.sort(values, descending=True).values[: self.config.latent_channels] / values.sum()).numpy()

    # ---- coefficient space (training)
    def encode_coefficients(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whitened coefficients ``(N, K, H, W)`` -> ``(mean, logvar)`` ``(N, Z, H/d, W/d)``."""
        blocks = F.pixel_unshuffle(p, self.config.downsample)
        return self.enc_linear(blocks) + self.enc_residual(blocks), self.enc_logvar(blocks)

    def decode_coefficients(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(N, Z, h, w)`` -> whitened coefficients ``(N, K, d*h, d*w)``."""
        return F.pixel_shuffle(self.dec_linear(z) + self.dec_residual(z), self.config.downsample)

    # ---- radiance space (export: the codec's graphs)
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, H, W)`` normalized radiance -> posterior ``(mean, logvar)``, each ``(N, Z, H/d, W/d)``."""
        return self.encode_coefficients(F.conv2d(x, self.project[:, :, None, None]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, Z, h, w)`` latent -> ``(N, C, d*h, d*w)`` normalized radiance."""
        return F.conv2d(self.decode_coefficients(z), self.expand[:, :, None, None])

    def loss(self, p: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Objective on a batch of coefficients ``p`` ``(N, K, H, W)`` with pixel ``mask`` ``(N, H, W)``.

        ``rms``: mean over valid pixels of the per-pixel RMS log-radiance error within the basis (sum over the K
        coefficients of (scale·error)², over C channels); ``kl``: nats per tile, entering as ``kl_weight·kl / (C·H·W)``.
        """
        mean, logvar = self.encode_coefficients(p)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if self.training else mean
        error = (self.decode_coefficients(z) - p) * self.scales[None, :, None, None]
        per_pixel = torch.sqrt(error.square().sum(dim=1) / self.config.n_channels + 1e-14)
        weight = mask.to(p.dtype)
        rms = (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
        kl = (0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)).sum(dim=(1, 2, 3)).mean()
        values = self.config.n_channels * p.shape[2] * p.shape[3]
        return {"loss": rms + self.config.kl_weight * kl / values, "rms": rms.detach(), "kl": kl.detach()}

    def forward(self, p: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training objective (:meth:`loss`): ``forward`` is the loss so that DistributedDataParallel wraps it."""
        return self.loss(p, mask)

    def n_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
