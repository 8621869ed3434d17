"""Check every chunk of every array of a store without writing anything (``tempocodec verify``).

For each array: its objects against the store's integrity record (:mod:`tempocodec.runtime.integrity`: none missing,
none added, each with the CRC-32 written); then each stored chunk itself. A VAE-coded radiance chunk is parsed, not
decoded (:mod:`tempocodec.codec.payload`: header, length, CRC-32, validity mask, the array's chunk shape, the model's
downsample and latent size, its recorded grid position); its shard index is checked (CRC-32C); the model the array
names must be found with its sha256 and statistics, and must be the one the store's band entry names. A lossless
chunk is decoded through zarr, which checks its CRC-32C. Stores written before the record and the checksums existed
are checked for what they hold; what cannot be checked there is reported as a note, not a fault.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import zarr

from tempocodec.codec import payload
from tempocodec.codec.config import CodecConfig
from tempocodec.codec.stored import array_layout, object_chunks, stored_objects
from tempocodec.errors import TempocodecError
from tempocodec.progress import progress_bar
from tempocodec.runtime import integrity
from tempocodec.runtime.artifacts import ModelArtifacts
from tempocodec.runtime.location import StoreTarget, Where, locate_store
from tempocodec.runtime.store import open_root, store_meta

Advance = Callable[[int], None]


@dataclass(frozen=True)
class Fault:
    """One thing found wrong: the ``array`` (path in the store; ``""`` for the store as a whole), the ``item``
    (object key, chunk grid position or ``""``) and what is wrong."""

    array: str
    item: str
    fault: str


@dataclass
class ArrayCheck:
    """What was checked of one array: ``codec`` (``vae``, ``predicted``: a ``radiance_error`` coded from the latents,
    decoded here, or ``lossless``), ``checksum`` (what guards its chunks:
    ``payload CRC-32``, ``crc32c`` or ``none``), stored ``objects`` read and ``chunks`` parsed or decoded."""

    path: str
    codec: str
    checksum: str
    objects: int = 0
    chunks: int = 0


@dataclass
class Report:
    """The outcome of :func:`verify_store`; ``ok`` only when no fault was found."""

    store: Where
    recorded: bool
    arrays: list[ArrayCheck] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every chunk of every array is whole."""
        return not self.faults

    def to_json(self) -> dict[str, Any]:
        """The machine-readable report (``tempocodec verify --json``)."""
        return {
            "store": str(self.store),
            "ok": self.ok,
            "integrity_record": self.recorded,
            "arrays": [vars(a) for a in self.arrays],
            "faults": [vars(f) for f in self.faults],
            "notes": self.notes,
        }


def verify_store(path: StoreTarget, *, progress: bool = True) -> Report:
    """Check every chunk of every array of the store ``path`` (nothing is written); raise :class:`TempocodecError`
    only when ``path`` is not a readable tempocodec store at all."""
    path = locate_store(path)
    root = open_root(path, check=False)
    meta = store_meta(root)
    report = Report(path, recorded="integrity" in meta)
    try:
        record = integrity.read_record(meta, path)
    except TempocodecError as err:
        record = None
        report.faults.append(Fault("", "", str(err).removeprefix(f"{path}: ")))
    if not report.recorded:
        report.notes.append("no integrity record (a store written before tempocodec kept one): a missing chunk cannot "
                            "be told from an empty one, nor a swapped lossless chunk from its neighbour")
    found = integrity.arrays(root)
    if record is not None:
        report.faults += [Fault(p, "", "recorded but missing from the store") for p in sorted(set(record.objects) - set(found))]
    listed = integrity.stored_keys(root)
    bar = progress_bar(enabled=progress)
    with bar:
        task = bar.add_task(f"verify {path.name}", total=sum(len(keys) for keys in listed.values()))
        for array_path, array in sorted(found.items()):
            _check_array(report, record, meta, array_path, array, listed[array_path],
                         lambda n: bar.advance(task, n))
    unguarded = [a.path for a in report.arrays if a.checksum == "none"]
    if record is None and unguarded:
        report.notes.append(f"{len(unguarded)} arrays have no checksum on their chunks (written before tempocodec "
                            f"added CRC-32C), a bit flip there reads as data: {', '.join(unguarded)}")
    return report


def _check_array(report: Report, record: integrity.Record | None, meta: dict[str, Any], path: str,
                 array: zarr.Array, keys: list[str], advance: Advance) -> None:
    """Check one array's objects against the record, then its chunks; faults and notes go into ``report``."""
    band, _, name = path.rpartition("/")
    entry = meta.get("bands", {}).get(band, {})
    vae = name == "radiance" and entry.get("radiance") == "vae"
    predicted = name == "radiance_error" and entry.get("radiance_error") == "predicted"  # decoded with its CRC-32
    kind = "vae" if vae else "predicted" if predicted else "lossless"
    check = ArrayCheck(path, kind, "payload CRC-32" if vae or predicted else _checksum(array))
    report.arrays.append(check)
    contents = _read_chunks_vae(report, check, meta, band, array, advance) if vae else \
        _decode_lossless(report, check, array, keys, advance)
    if record is None:
        return
    if path not in record.objects:
        report.faults.append(Fault(path, "", "not in the store's integrity record (an array added since)"))
        return
    if check.checksum == "none":
        report.faults.append(Fault(path, "", "no checksum codec, though the store was written with one on every array"))
    discrepancy = integrity.compare(record.objects[path], keys, contents)
    report.faults += [Fault(path, integrity.tile(array, k), "missing (it would read as fill)") for k in discrepancy.missing]
    report.faults += [Fault(path, integrity.tile(array, k), "not written with the store") for k in discrepancy.extra]
    report.faults += [Fault(path, integrity.tile(array, k), "differs from what was written (CRC-32 mismatch)")
                      for k in discrepancy.changed]


def _checksum(array: zarr.Array) -> str:
    """``crc32c`` when a CRC-32C codec guards ``array``'s chunks (v3 codec chain, v2 compressor or filter), else
    ``none``."""
    meta: dict[str, Any] = array.metadata.to_dict()
    names = [c.get("name") for c in meta.get("codecs", []) if isinstance(c, dict)]
    names += [c.get("id") for c in [meta.get("compressor"), *(meta.get("filters") or [])] if isinstance(c, dict)]
    return "crc32c" if "crc32c" in names else "none"


def _read_chunks_vae(report: Report, check: ArrayCheck, meta: dict[str, Any], band: str, array: zarr.Array,
                     advance: Advance) -> dict[str, bytes]:
    """Parse every stored payload of a VAE-coded radiance array (no decoder run) and check the model it names;
    returns the bytes of each stored object by key (for the record's CRC-32)."""
    try:
        layout = array_layout(array)
    except TempocodecError as err:
        report.faults.append(Fault(check.path, "", _short(err, array)))
        return {}
    art = _check_model(report, check.path, layout.config, meta["bands"][band])
    contents = {}
    for index, key, data in stored_objects(array, layout):
        if data is None:
            continue
        key = key.removeprefix(f"{array.path}/")
        contents[key] = data
        check.objects += 1
        advance(1)
        try:
            chunks = object_chunks(array, layout, index, data)
        except TempocodecError as err:
            report.faults.append(Fault(check.path, integrity.tile(array, key), _short(err, array)))
            continue
        for at, chunk in chunks.items():
            check.chunks += 1
            fault = _payload_fault(chunk, layout.config, art)
            if fault:
                report.faults.append(Fault(check.path, f"chunk {at}", fault))
    return contents


def _check_model(report: Report, path: str, config: CodecConfig, entry: dict[str, Any]) -> ModelArtifacts | None:
    """The model an array's codec names, found with its sha256 and statistics and the one the store's band entry
    names; None (and a fault) when it cannot be found here."""
    if (entry.get("model"), entry.get("model_sha256")) != (config.model, config.model_sha256):
        entry_sha = str(entry.get("model_sha256"))[:12]
        report.faults.append(Fault(path, "", f"codec names model {config.model!r} ({config.model_sha256[:12]}…), the "
                                             f"store's band entry {entry.get('model')!r} ({entry_sha}…)"))
    try:
        return config.artifacts()
    except TempocodecError as err:
        report.faults.append(Fault(path, "", f"cannot be decoded here: {err}"))
        return None


def _payload_fault(chunk: bytes, config: CodecConfig, art: ModelArtifacts | None) -> str | None:
    """What is wrong with one payload of an array with codec configuration ``config`` and model ``art`` (None: the
    model could not be found, its sizes are not checked); None when the payload is whole."""
    try:
        parsed = payload.unpack(chunk, where="payload", chunk_shape=config.chunk_shape)
    except TempocodecError as err:
        return str(err).removeprefix("payload: ")
    sizes = (parsed.downsample, parsed.latent.shape[0])
    if art is not None and parsed.extent[0] and sizes != (art.downsample, art.latent_channels):
        return (f"downsample {sizes[0]} and {sizes[1]} latent channels, model {art.name!r} has "
                f"{art.downsample} and {art.latent_channels}")
    return None


def _decode_lossless(report: Report, check: ArrayCheck, array: zarr.Array, keys: list[str],
                     advance: Advance) -> dict[str, bytes]:
    """Decode through zarr every stored chunk of a lossless array (its codecs check their checksums); returns the
    bytes of each stored object by key (for the record's CRC-32)."""
    block = array.shards or array.chunks
    grid = {array.metadata.encode_chunk_key(index): index
            for index in product(*(range(math.ceil(s / b)) for s, b in zip(array.shape, block, strict=True)))}
    stored = set(keys)
    for key, index in grid.items():
        if key not in stored:
            continue
        check.objects += 1
        check.chunks += 1
        advance(1)
        try:
            array.get_block_selection(index)
        except Exception as err:  # zarr and numcodecs raise many types for damaged bytes
            report.faults.append(Fault(check.path, integrity.tile(array, key), _short(err, array)))
    found = integrity.fetch_objects(array.store, {check.path: keys})[check.path]
    return {key: data for key, data in found.items() if data is not None}


def _short(err: Exception, array: zarr.Array) -> str:
    """An exception as one line, without the store path (the report names the store once)."""
    text = " ".join(str(err).split())
    for prefix in (f"{array.store_path} ", f"{array.store_path}: "):
        text = text.removeprefix(prefix)
    return text if isinstance(err, TempocodecError) else f"{type(err).__name__}: {text}"[:300]
