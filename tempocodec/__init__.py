"""tempocodec: learned compression of TEMPO hyperspectral radiance.

The data path, one module per step:
granule (L1B/L2 netCDF I/O) -> tiles -> normalize -> encode (ONNX) -> Zarr store -> decode / query.
"""

from tempocodec.errors import TempocodecError

__version__ = "0.1.0"
__all__ = ["TempocodecError", "__version__"]
