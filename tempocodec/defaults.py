"""Defaults the command line shows and the library uses, in a module light enough for the CLI to import at start."""

DEFAULT_LATENT_DTYPE = "quantized"
"""What ``compress`` stores latents as unless told otherwise (see :data:`tempocodec.codec.config.LATENT_DTYPES`)."""
RELATIVE_LATENT_STEP = 0.01
"""Quantization step of ``quantized`` latents unless one is given, as a fraction of the latent's spread on the
granule (the RMS over latent channels of their standard deviations on the sample chunks; 0.022 latent units for
``tempo-vae-uv-2``): on training-distribution granules the latent-only error grows by < 1 % over float16 latents
while they take ~6 bits instead of 16 (docs/benchmarks.md)."""
