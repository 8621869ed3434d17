"""The codec: chunk payload, numpy kernel, Zarr v3 and numcodecs faces, and the latent reader.

``VAECodec`` (Zarr v3, ``"tempocodec.vae"``) and ``VAENumcodec`` (numcodecs, ``"tempocodec_vae"``) are what the
``zarr.codecs`` / ``numcodecs.codecs`` entry points name, so their import path here is stable.
"""

from tempocodec.codec.kernel import VAECodec, VAENumcodec

__all__ = ["VAECodec", "VAENumcodec"]
