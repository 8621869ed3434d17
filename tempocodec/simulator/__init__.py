"""A physically based, fast simulator of TEMPO Level-1B granules with Level-2 "truth" (numpy only).

It is a tool for tests and training, not a retrieval-grade radiative transfer code; ``docs/simulator.md`` states
its physics, approximations, magnitudes and data sources. Everything is deterministic for a seed. Modules, in the
order of the data path:

- :mod:`~tempocodec.simulator.config`: :class:`SceneConfig`, :class:`NoiseModel`, band selection
- :mod:`~tempocodec.simulator.physics`: physical constants and the surface albedo spectra
- :mod:`~tempocodec.simulator.geometry`: scan geometry, solar and viewing angles, TEMPO time
- :mod:`~tempocodec.simulator.scene`: surface, clouds, gases and missing data of a scene
- :mod:`~tempocodec.simulator.atmosphere`: Rayleigh + Lambertian reflectance, slant columns, air mass factors
- :mod:`~tempocodec.simulator.radiance`: the forward model of one band, noise and detector defects
- :mod:`~tempocodec.simulator.truth`: the four Level-2 truth granules
- :mod:`~tempocodec.simulator.granule`: the L1B granule and :func:`simulate_granule`
- :mod:`~tempocodec.simulator.write`: :func:`write_simulated` / :func:`write_scenes`, the files

The names below are the simulator's public API.
"""

from tempocodec.simulator.config import NoiseModel, SceneConfig, resolve_bands
from tempocodec.simulator.geometry import STEP_SECONDS
from tempocodec.simulator.granule import simulate_granule
from tempocodec.simulator.write import write_scenes, write_simulated

__all__ = ["STEP_SECONDS", "NoiseModel", "SceneConfig", "resolve_bands", "simulate_granule", "write_scenes", "write_simulated"]
