"""TEMPO file names: ``TEMPO_<product>_L<level>_V<vv>_<YYYYMMDDThhmmssZ>[_S<sss>[G<gg>]].nc``, made and parsed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tempocodec.errors import TempocodecError

_NAME_RE = re.compile(
    r"^TEMPO_(?P<product>[A-Z0-9]+)_L(?P<level>\d)_V(?P<version>\d{2})_(?P<time>\d{8}T\d{6}Z)"
    r"(?:_S(?P<scan>\d{3})(?:G(?P<granule>\d{2}))?)?\.nc$"
)


@dataclass(frozen=True)
class TempoName:
    """The parts of a TEMPO file name ``TEMPO_<product>_L<level>_V<vv>_<YYYYMMDDThhmmssZ>[_S<sss>[G<gg>]].nc``."""

    product: str
    level: int
    version: int
    time: datetime
    scan: int | None = None
    granule: int | None = None


def tempo_filename(
    product: str, level: int, time: datetime, scan: int | None = None, granule: int | None = None, version: int = 3
) -> str:
    """The TEMPO file name for ``product`` at level ``level``, e.g. ``TEMPO_RAD_L1_V03_20250406T215103Z_S012G07.nc``.

    ``time`` is the granule start (a naive datetime is taken as UTC); ``scan`` 0–999 and ``granule`` 0–99 are
    left out when None (irradiance files have neither, L3 files only a scan).
    """
    if not re.fullmatch(r"[A-Z0-9]+", product):
        raise TempocodecError(f"TEMPO file name: product {product!r} must be upper-case letters and digits")
    for label, value, top in (
        ("level", level, 9),
        ("version", version, 99),
        ("scan", scan, 999),
        ("granule", granule, 99),
    ):
        if value is not None and not 0 <= value <= top:
            raise TempocodecError(f"TEMPO file name: {label} {value} is outside 0..{top}")
    if granule is not None and scan is None:
        raise TempocodecError("TEMPO file name: a granule number needs a scan number")
    utc = time.astimezone(UTC) if time.tzinfo else time
    name = f"TEMPO_{product}_L{level}_V{version:02d}_{utc:%Y%m%dT%H%M%SZ}"
    if scan is not None:
        name += f"_S{scan:03d}" + (f"G{granule:02d}" if granule is not None else "")
    return name + ".nc"


def l1b_filename(time: datetime, scan: int, granule: int, version: int = 3, product: str = "RAD") -> str:
    """The L1B radiance file name, e.g. ``TEMPO_RAD_L1_V03_20250406T215103Z_S012G07.nc`` ("RADT": twilight)."""
    return tempo_filename(product, 1, time, scan, granule, version)


def parse_tempo_filename(name: str | os.PathLike) -> TempoName | None:
    """The parts of a TEMPO file name (directories ignored), or None when ``name`` does not follow the pattern."""
    match = _NAME_RE.match(Path(name).name)
    if match is None:
        return None
    parts = match.groupdict()
    return TempoName(
        product=parts["product"],
        level=int(parts["level"]),
        version=int(parts["version"]),
        time=datetime.strptime(parts["time"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        scan=None if parts["scan"] is None else int(parts["scan"]),
        granule=None if parts["granule"] is None else int(parts["granule"]),
    )
