"""The codec: configuration, chunk payload, numpy kernel, Zarr v3 and numcodecs faces, and the latent reader.

``VAECodec`` (Zarr v3, ``"tempocodec.vae"``, :mod:`tempocodec.codec.zarr3`) and ``VAENumcodec`` (numcodecs,
``"tempocodec_vae"``, :mod:`tempocodec.codec.numcodec`) are what the ``zarr.codecs`` / ``numcodecs.codecs`` entry
points name, so their import path here is stable; so are ``NoiseCodec`` / ``NoiseNumcodec`` (``"tempocodec.noise"``,
``"tempocodec_noise"``, :mod:`tempocodec.codec.noise_codec`), which decode a ``radiance_error`` coded from the latents.
"""

from tempocodec.codec.noise_codec import NoiseCodec, NoiseNumcodec
from tempocodec.codec.numcodec import VAENumcodec
from tempocodec.codec.zarr3 import VAECodec

__all__ = ["NoiseCodec", "NoiseNumcodec", "VAECodec", "VAENumcodec"]
