"""Every stored variable of a band but radiance checked against the original granule: within the bound its
``tempocodec_lossy`` attribute states, or exactly (fill values and NaN included) where it states none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from tempocodec.prepare.tiles import TILE
from tempocodec.runtime.auxcodecs import bound_text, within_bound


@dataclass(frozen=True)
class VariableCheck:
    """One variable: its stored ``bound`` (``exact``, ``abs <= 1e-05 degrees``, ...) and whether every value holds it."""

    name: str
    bound: str
    held: bool


def check_variables(source: xr.Dataset, stored: xr.Dataset) -> tuple[VariableCheck, ...]:
    """The check of each variable of the original band ``source`` (but radiance) that the store's band ``stored``
    holds, reading :data:`~tempocodec.prepare.tiles.TILE` mirror steps at a time."""
    out = []
    for name, var in source.variables.items():  # coordinates too: latitude and longitude are radiance's
        if name == "radiance" or name not in stored.variables or name in source.dims:
            continue
        kept = stored.variables[name]
        steps = var.sizes.get("mirror_step")
        parts = [slice(None)] if steps is None else [slice(s, s + TILE) for s in range(0, steps, TILE)]
        held = all(_within(str(name), kept.attrs, var, kept, part) for part in parts)
        out.append(VariableCheck(str(name), bound_text(str(name), kept.attrs), held))
    return tuple(out)


def _within(name: str, attrs: dict, original: xr.Variable, stored: xr.Variable, steps: slice) -> bool:
    """Whether the ``steps`` of ``stored`` hold those of ``original`` within the bound in ``attrs``."""
    pick = {"mirror_step": steps} if "mirror_step" in original.dims else {}
    a, b = np.asarray(original.isel(pick).values), np.asarray(stored.isel(pick).values)
    return a.shape == b.shape and within_bound(name, attrs, a, b)
