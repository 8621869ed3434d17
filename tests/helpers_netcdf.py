"""Assertions shared by the netCDF I/O tests (test_granule.py, test_level2.py): bitwise and attribute-exact equality."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr

from tempocodec.errors import TempocodecError


def assert_same_attrs(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    """Same keys in the same order, same Python/numpy types, same values (arrays: same dtype and elements)."""
    assert list(a) == list(b), f"{where}: attribute names differ"
    for key in a:
        va, vb = a[key], b[key]
        assert type(va) is type(vb), f"{where}:{key}: {type(va)} vs {type(vb)}"
        if isinstance(va, (np.ndarray, np.generic)):
            assert va.dtype == vb.dtype, f"{where}:{key}: {va.dtype} vs {vb.dtype}"
            assert np.asarray(va).tobytes() == np.asarray(vb).tobytes(), f"{where}:{key} values differ"
        else:
            assert va == vb, f"{where}:{key}: {va!r} vs {vb!r}"


def assert_same_dataset(a: xr.Dataset, b: xr.Dataset, where: str) -> None:
    """Same variables (order too), dims, dtypes, bitwise-equal values (fills and NaNs included) and attributes."""
    assert list(a.variables) == list(b.variables), f"{where}: variables differ"
    assert_same_attrs(dict(a.attrs), dict(b.attrs), where)
    for name in a.variables:
        va, vb = a[name].variable, b[name].variable
        assert va.dims == vb.dims, f"{where}/{name}: dims {va.dims} vs {vb.dims}"
        assert va.dtype == vb.dtype, f"{where}/{name}: dtype {va.dtype} vs {vb.dtype}"
        if va.dtype == object:  # variable-length strings: compare the strings, not the pointers
            assert va.values.tolist() == vb.values.tolist(), f"{where}/{name}: values differ"
        else:
            assert np.asarray(va.values).tobytes() == np.asarray(vb.values).tobytes(), f"{where}/{name}: values differ"
        assert_same_attrs(dict(va.attrs), dict(vb.attrs), f"{where}/{name}")


def assert_one_line_error(excinfo: pytest.ExceptionInfo[TempocodecError], path: Any, *words: str) -> None:
    """The error is a one-line TempocodecError that names ``path`` and contains each of ``words``."""
    message = str(excinfo.value)
    assert excinfo.type is TempocodecError
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
