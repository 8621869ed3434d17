"""TEMPO's two spectral bands: their group names, the short names the command line takes for them, their channels."""

BANDS: tuple[str, str] = ("band_290_490_nm", "band_540_740_nm")
"""Band group names of the L1B files (and of the stores), in this order everywhere."""

BAND_CHOICES: dict[str, tuple[str, ...]] = {"uv": (BANDS[0],), "vis": (BANDS[1],), "all": BANDS}
"""Short band selections (``--band uv|vis|all``) -> band group names."""

N_CHANNELS = 1028
"""Spectral channels of each band."""
