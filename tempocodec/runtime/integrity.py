"""The record of what a store holds, written with it, and the checks against that record.

Zarr reads a chunk object that is not there as the fill value (the specification's "empty chunk"), so for a lossy
store a lost shard would decode as a granule of fill without a word. :func:`build_record` therefore lists, when the
store is written, every chunk (or shard) object of every array with the CRC-32 of its bytes; the store keeps it as
the ``integrity`` entry of its root attribute ``tempocodec``::

    {"format": "tempocodec-integrity/1", "checksum": "crc32",
     "objects": {"band_290_490_nm/radiance": {"c/0/0/0": 2715262231, ...}, "mirror_step": {"c/0": ...}, ...}}

(array paths from the store root, keys relative to the array). :func:`check_listed` compares what the store holds
with the record by listing keys only (cheap: every reader does it); :func:`check_contents` also reads each object of
one array and compares its CRC-32, which finds swapped, replaced and damaged objects whatever their codec. Stores written
before the record existed have none: there an absent object stays "empty" and only the codecs' own checks apply.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from typing import Any

import zarr
from zarr.abc.store import Store

from tempocodec.codec.stored import fetch, list_keys
from tempocodec.errors import TempocodecError
from tempocodec.runtime.location import Where

INTEGRITY_FORMAT = "tempocodec-integrity/1"
METADATA_DOCUMENTS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
_NAMED = 4
"""Objects named in one error message; the rest are counted."""


@dataclass(frozen=True)
class Record:
    """The objects a store was written with: array path -> object key (relative to the array) -> CRC-32."""

    objects: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        """The ``integrity`` entry of the root attribute ``tempocodec``."""
        return {"format": INTEGRITY_FORMAT, "checksum": "crc32", "objects": self.objects}


def arrays(root: zarr.Group) -> dict[str, zarr.Array]:
    """Every array of the hierarchy under ``root``, by its path from the root (``"band_290_490_nm/radiance"``)."""
    return {path: node for path, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}


def stored_keys(root: zarr.Group) -> dict[str, list[str]]:
    """The keys (relative to the array) of the chunk or shard objects each array under the store root ``root`` holds,
    by array path, metadata documents left out; one listing of the store."""
    found: dict[str, list[str]] = {path: [] for path in arrays(root)}
    for key in list_keys(root.store, ""):
        parts = key.split("/")
        owner = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in found), None)
        if owner is not None and parts[-1] not in METADATA_DOCUMENTS:
            found[owner].append(key[len(owner) + 1 :])
    return {path: sorted(keys) for path, keys in found.items()}


def crc32(data: bytes) -> int:
    """The CRC-32 (zlib) of one object's bytes, as the record keeps it."""
    return zlib.crc32(data)


def fetch_objects(store: Store, keys: dict[str, list[str]]) -> dict[str, dict[str, bytes | None]]:
    """The bytes of the objects ``keys`` (array path -> keys relative to the array) of ``store``, None where absent;
    one batch of reads."""
    flat = [(path, key) for path, names in keys.items() for key in names]
    found = fetch(store, [f"{path}/{key}" for path, key in flat])
    out: dict[str, dict[str, bytes | None]] = {path: {} for path in keys}
    for (path, key), data in zip(flat, found, strict=True):
        out[path][key] = data
    return out


def build_record(root: zarr.Group) -> Record:
    """Read back every object of every array of the store root ``root`` and record its CRC-32."""
    found = fetch_objects(root.store, stored_keys(root))
    return Record({path: {key: crc32(data) for key, data in objects.items() if data is not None}
                   for path, objects in sorted(found.items())})


def read_record(meta: dict[str, Any], where: Where) -> Record | None:
    """The record in the root attribute ``tempocodec`` (``meta``), None for a store written before records existed;
    raise when it is there but malformed."""
    entry = meta.get("integrity")
    if entry is None:
        return None
    objects = entry.get("objects") if isinstance(entry, dict) and entry.get("format") == INTEGRITY_FORMAT else None
    if not isinstance(objects, dict) or not all(
        isinstance(keys, dict) and all(isinstance(crc, int) for crc in keys.values()) for keys in objects.values()
    ):
        raise TempocodecError(f"{where}: damaged store: its integrity record is not a {INTEGRITY_FORMAT} object list")
    return Record({str(path): dict(keys) for path, keys in objects.items()})


def tile(array: zarr.Array, key: str) -> str:
    """``key`` with the block of ``array`` it holds, e.g. ``c/0/1/0 [0:64, 512:1024, 0:1028]`` (just ``key`` when it is
    no object of the array's grid)."""
    block = array.shards or array.chunks
    grid = [range(math.ceil(s / b)) for s, b in zip(array.shape, block, strict=True)]
    for index in product(*grid):
        if array.metadata.encode_chunk_key(index) == key:
            spans = (f"{i * b}:{min((i + 1) * b, s)}" for i, b, s in zip(index, block, array.shape, strict=True))
            return f"{key} [{', '.join(spans)}]"
    return key


def _named(array: zarr.Array, keys: Iterable[str]) -> str:
    """The first few of ``keys`` with their blocks, and how many more there are."""
    keys = list(keys)
    text = ", ".join(tile(array, key) for key in keys[:_NAMED])
    return text + (f" and {len(keys) - _NAMED} more" if len(keys) > _NAMED else "")


@dataclass(frozen=True)
class Discrepancy:
    """How one array's objects differ from its record: keys ``missing`` (recorded, not stored), ``extra`` (stored,
    never recorded) and ``changed`` (stored with other bytes: swapped, replaced, damaged)."""

    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.changed)

    def describe(self, array: zarr.Array, recorded: int) -> str:
        """One line naming the faulty objects of ``array`` (which has ``recorded`` objects in its record)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of its {recorded} recorded chunk objects are missing "
                         f"({_named(array, self.missing)}; they would read as fill)")
        if self.extra:
            parts.append(f"{len(self.extra)} chunk objects were not written with the store ({_named(array, self.extra)})")
        if self.changed:
            parts.append(f"{len(self.changed)} chunk objects differ from what was written "
                         f"({_named(array, self.changed)}: CRC-32 mismatch)")
        return "; ".join(parts)


def compare(recorded: dict[str, int], present: Iterable[str], contents: dict[str, bytes] | None = None) -> Discrepancy:
    """The :class:`Discrepancy` of an array with ``recorded`` objects that holds the keys ``present``; with
    ``contents`` (key -> bytes of the present objects), also the objects whose bytes changed."""
    present = set(present)
    changed = [] if contents is None else [k for k, data in contents.items() if k in recorded and crc32(data) != recorded[k]]
    return Discrepancy(tuple(sorted(set(recorded) - present)), tuple(sorted(present - set(recorded))), tuple(sorted(changed)))


def check_listed(root: zarr.Group, record: Record, where: Where) -> None:
    """Raise naming the first damaged array when any array of the store root ``root`` disagrees with ``record`` by
    its objects' keys, or an array the record lists is gone."""
    found = arrays(root)
    keys = stored_keys(root)
    for path, recorded in record.objects.items():
        if path not in found:
            raise TempocodecError(f"{where}: damaged store: array {path} is recorded but missing")
        discrepancy = compare(recorded, keys[path])
        if discrepancy:
            raise TempocodecError(f"{where}: damaged store: {path}: {discrepancy.describe(found[path], len(recorded))}")


def check_contents(root: zarr.Group, paths: list[str], record: Record, where: Where) -> None:
    """Raise naming the first array among ``paths`` (from the store root ``root``) that holds other objects, or
    other bytes, than ``record`` says."""
    unrecorded = [path for path in paths if path not in record.objects]
    if unrecorded:
        raise TempocodecError(f"{where}: damaged store: array {unrecorded[0]} is not in the store's integrity record")
    listed = stored_keys(root)
    found = fetch_objects(root.store, {path: listed.get(path, []) for path in paths})
    for path in paths:
        present = {key: data for key, data in found[path].items() if data is not None}
        discrepancy = compare(record.objects[path], present, present)
        if discrepancy:
            array = root[path]
            if not isinstance(array, zarr.Array):
                raise TempocodecError(f"{where}: damaged store: {path} is not a zarr array")
            raise TempocodecError(f"{where}: damaged store: {path}: {discrepancy.describe(array, len(record.objects[path]))}")
