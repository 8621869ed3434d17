"""The configuration of a training run, saved as ``config.json`` in the run directory."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tempocodec.errors import TempocodecError
from tempocodec.training.vae import VAEConfig


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run directory."""

    data: str
    band: str = "band_290_490_nm"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    max_steps: int | None = None
    device: str = "cpu"
    val_fraction: float = 0.2
    val_every: int = 0
    patience: int = 5
    checkpoint_every: int = 200
    crop: int = 64
    min_valid: float = 0.5
    pca_init: bool = True
    memory_gb: float = 8.0
    gpu_cache_gb: float = 40.0
    model: dict = field(default_factory=lambda: VAEConfig().to_dict())

    def vae_config(self) -> VAEConfig:
        """The model configuration."""
        return VAEConfig.from_dict(self.model)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from ``asdict`` output; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise TempocodecError(f"training config: unknown keys {sorted(unknown)}")
        return cls(**data)
