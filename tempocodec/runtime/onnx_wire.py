"""The tensors of a serialized ONNX model that keep their data outside its bytes, found without the ``onnx`` package.

A tensor with ``data_location = EXTERNAL`` (or any ``external_data`` entry) names a file that ONNX Runtime opens at
session creation: relative to the model's path, or, for a model given as bytes, to the working directory or not at all,
depending on the ONNX Runtime version. Such a file is outside what a model's manifest hashes, and its ``location`` may
point anywhere, so :func:`external_tensors` finds them for :func:`tempocodec.runtime.artifacts.session` to refuse.

It reads the protobuf wire format directly and walks every message of ONNX IR version 10 that can hold a
``TensorProto``: the graph's initializers and sparse initializers, node attributes (tensors, sparse tensors and
subgraphs, recursively), the model's functions and its training-info graphs. Everything else is skipped by length.
"""

from __future__ import annotations

from collections.abc import Iterator

# message kinds -> {field number: message kind of that (length-delimited) field}
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 8, 13, 14, 1
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """The base-128 varint at ``data[pos]`` and the position after it; ValueError when it runs past ``end``."""
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated or overlong varint")


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int] | None]]:
    """``(field number, wire type, value)`` of each field of the message ``data[start:end]``: ``value`` is the integer
    of a varint, the ``(start, end)`` of a length-delimited payload, None for fixed-width fields (skipped)."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        value: int | tuple[int, int] | None
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
        elif wire == _LENGTH:
            size, pos = _varint(data, pos, end)
            value, pos = (pos, pos + size), pos + size
        elif wire in (_FIXED64, _FIXED32):
            value, pos = None, pos + (8 if wire == _FIXED64 else 4)
        else:
            raise ValueError(f"wire type {wire} (groups are not used by ONNX)")
        if pos > end:
            raise ValueError("field runs past the end of its message")
        yield number, wire, value


def _is_external(data: memoryview, start: int, end: int) -> tuple[bool, str]:
    """Whether the ``TensorProto`` ``data[start:end]`` keeps its data externally, and its name."""
    external, name = False, ""
    for number, wire, value in _fields(data, start, end):
        entry = (number, wire) == (_TENSOR_EXTERNAL_DATA, _LENGTH)
        if entry or (number, wire, value) == (_TENSOR_DATA_LOCATION, _VARINT, _EXTERNAL):
            external = True
        elif number == _TENSOR_NAME and isinstance(value, tuple):  # a length-delimited field
            name = bytes(data[value[0] : value[1]]).decode("utf-8", "replace")
    return external, name


def external_tensors(model: bytes) -> list[str]:
    """Names of the tensors of the serialized ``ModelProto`` ``model`` whose data is external (empty: self-contained).

    Raises ValueError when the bytes are not a well-formed protobuf message.
    """
    data = memoryview(model)
    found: list[str] = []
    stack = [(_MODEL, 0, len(data))]
    while stack:
        kind, start, end = stack.pop()
        if kind == _TENSOR:
            external, name = _is_external(data, start, end)
            if external:
                found.append(name or "(unnamed)")
            continue
        children = _CHILDREN[kind]
        for number, _wire, value in _fields(data, start, end):
            if isinstance(value, tuple) and number in children:  # a length-delimited field
                stack.append((children[number], *value))
    return found
