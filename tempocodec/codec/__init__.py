"""The codec: configuration, chunk payload, numpy kernel, Zarr v3 and numcodecs faces, and the latent reader.

``VAECodec`` (Zarr v3, ``"tempocodec.vae"``, :mod:`tempocodec.codec.zarr3`) and ``VAENumcodec`` (numcodecs,
``"tempocodec_vae"``, :mod:`tempocodec.codec.numcodec`) are what the ``zarr.codecs`` / ``numcodecs.codecs`` entry
points name, so their import path here is stable.
"""

from tempocodec.codec.numcodec import VAENumcodec
from tempocodec.codec.zarr3 import VAECodec

__all__ = ["VAECodec", "VAENumcodec"]
