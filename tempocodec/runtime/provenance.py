"""CF provenance of what tempocodec writes: the global ``history`` attribute and each lossy variable's marker.

CF (section 2.6.2) asks every program that modifies a file to append a line ``TIMESTAMP: what was done`` to the
global ``history``; ``compress`` appends one to the store's global attributes and ``decompress`` another to the
netCDF file's, so a decompressed granule says that its radiance went through a lossy codec. Each lossy variable
carries the attribute ``tempocodec_lossy`` (codec, model, bound), kept by ``decompress``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tempocodec import __version__

LOSSY_ATTR = "tempocodec_lossy"


def _stamp() -> str:
    """The current UTC time as CF writes it in ``history`` (ISO 8601, seconds, ``Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_history(attrs: Mapping[str, Any], action: str) -> dict[str, Any]:
    """A copy of the global ``attrs`` with the line ``TIMESTAMP: tempocodec VERSION ACTION`` appended to
    ``history`` (created when absent)."""
    line = f"{_stamp()}: tempocodec {__version__} {action}"
    old = attrs.get("history")
    if isinstance(old, bytes):
        old = old.decode("utf-8", "replace")
    out = dict(attrs)
    out["history"] = f"{old}\n{line}" if old else line
    return out


def compress_note(source: str | os.PathLike, models: Mapping[str, Any], lossless_aux: bool,
                  radiance_error: str = "auto") -> str:
    """The ``history`` action of ``compress``: source file, the model of each band, what else is lossy (``radiance_error``:
    the coding asked for it, :data:`~tempocodec.runtime.radiance_coding.ERROR_MODES`)."""
    coded = ", ".join(f"{band} radiance through model {art.name} (lossy)" for band, art in sorted(models.items()))
    error = ("radiance_error bit-rounded" if radiance_error == "rounded" else
             f"radiance_error exact ({CODING_ATTR}) or bit-rounded ({LOSSY_ATTR}), as its attributes say")
    aux = ("other variables lossless, radiance_error bit-rounded" if lossless_aux else
           f"geolocation and angles within the bounds in their {LOSSY_ATTR} attributes, {error}")
    return f"compress {Path(source).name}: {coded or 'radiance lossless'}; {aux}"


def radiance_note(model: Any, latent_dtype: str, entry: Mapping[str, Any]) -> str:
    """The ``tempocodec_lossy`` text of a VAE-coded radiance: codec, model and its identity, latent dtype, and the
    bound of its band ``entry`` (the ``tempocodec.bands`` entry) where it has one."""
    bound = entry.get("error_bound")
    error = (f"every valid value within {bound:g} x its radiance_error" if bound is not None
             else "no pointwise bound; error statistics in the model card")
    return (f"tempocodec.vae codec, model {model.name} (sha256 {model.sha256[:12]}), {latent_dtype} latents: "
            f"reconstructed, not the measured values; {error}")


CODING_ATTR = "tempocodec_coding"
"""Attribute of a variable stored exactly but in tempocodec's own coding (how; dropped on decompress)."""


def error_note(entry: Mapping[str, Any]) -> str:
    """The :data:`CODING_ATTR` text of a ``radiance_error`` coded from the latents (band ``entry``): exact."""
    return (f"tempocodec.noise codec: predicted from the radiance the latents decode to by a noise model fitted to this "
            f"granule, coded on its grid of {entry['radiance_error_digits']} significant digits; exact (every value "
            f"as in the source)")


def decompress_note(store: str | os.PathLike) -> str:
    """The ``history`` action of ``decompress``."""
    return f"decompress {Path(store).name}: variables marked {LOSSY_ATTR} are reconstructions"
