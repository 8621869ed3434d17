"""A bounded fuzz of damaged radiance objects: 100 seeded mutations of a v3 shard and 100 of a v2 chunk.

Each mutated store is read through :func:`tempocodec.runtime.store.open_store` (what decompress and evaluate use)
twice: with the store's integrity record, and with the record removed (as in a store written before records
existed, where only the payload CRC-32, the shard index CRC-32C, the recorded positions and the codec's own checks
stand). Every outcome must be a one-line :class:`TempocodecError` or a decode equal to the undamaged one: never
another exception (a traceback), never different data. With the record, every mutation must be refused. A missing
object is fuzzed with the record only: without it zarr reads it as fill, by the Zarr specification (docs/format.md).
Every fifth mutation is also verified (``tempocodec verify`` must not call the store whole).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from tempocodec.errors import TempocodecError
from tempocodec.runtime.store import compress_granule, open_store
from tempocodec.runtime.verify import verify_store
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
MUTATIONS = 100
TIME_LIMIT_S = 180.0
"""For all the mutations of one format, both readings each (about 20 s on a 2-core CI machine)."""
OBJECTS = {3: ("c/0/0/0", "c/1/0/0"), 2: ("0.0.0", "0.1.0", "1.0.0", "1.1.0")}
"""The radiance objects of a 70×70 granule: two 64×512 shards (v3), four 64×64 chunks (v2)."""

Rng = np.random.Generator


def _flip(data: bytes, rng: Rng, lo: int, hi: int) -> bytes:
    """``data`` with 1 to 4 bits flipped at offsets in ``[lo, hi)`` (clipped to the data)."""
    out = bytearray(data)
    lo, hi = max(0, min(lo, len(out) - 1)), max(1, min(hi, len(out)))
    for _ in range(int(rng.integers(1, 5))):
        out[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


DAMAGE: dict[str, Callable[[bytes, Rng], bytes | None]] = {
    "bitflip": lambda b, rng: _flip(b, rng, 0, len(b)),
    "header-bitflip": lambda b, rng: _flip(b, rng, 0, 36),
    "tail-bitflip": lambda b, rng: _flip(b, rng, len(b) - 68, len(b)),
    "truncate": lambda b, rng: b[: int(rng.integers(1, len(b)))],
    "zero-length": lambda b, rng: b"",
    "random-bytes": lambda b, rng: rng.bytes(len(b)),
    "append": lambda b, rng: b + rng.bytes(int(rng.integers(1, 64))),
    "swap": lambda b, rng: None,  # handled by mutate: the object trades places with another one
    "missing": lambda b, rng: None,  # handled by mutate: the object is deleted
}
KINDS = tuple(DAMAGE)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_models) -> dict[tuple[int, bool], Path]:
    """Stores of a 70×70 granule by (format, has its integrity record)."""
    out = tmp_path_factory.mktemp("fuzz")
    granule = write_simulated(out / "granule", 70, 70, seed=12, bands="uv")[0]
    found = {}
    for fmt in (3, 2):
        path = compress_granule(granule, out / f"v{fmt}.zarr", model="tiny1028", zarr_format=fmt, progress=False).path
        bare = Path(shutil.copytree(path, out / f"v{fmt}-bare.zarr"))
        root = zarr.open_group(bare, mode="r+")
        root.attrs["tempocodec"] = {k: v for k, v in root.attrs["tempocodec"].items() if k != "integrity"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr's note that consolidated metadata is not in the v3 specification
            zarr.consolidate_metadata(bare)
        found[(fmt, True)], found[(fmt, False)] = path, bare
    return found


def mutate(store: Path, fmt: int, kind: str, rng: Rng) -> dict[Path, bytes]:
    """Damage one radiance object of ``store`` in place; returns the original bytes of every file touched."""
    base = store / UV / "radiance"
    names = OBJECTS[fmt]
    target = base / names[int(rng.integers(len(names)))]
    saved = {target: target.read_bytes()}
    if kind == "swap":
        other = base / next(n for n in rng.permutation(names) if base / n != target)
        saved[other] = other.read_bytes()
        target.write_bytes(saved[other])
        other.write_bytes(saved[target])
    elif kind == "missing":
        target.unlink()
    else:
        target.write_bytes(DAMAGE[kind](saved[target], rng))
    return saved


def outcome(store: Path, reference: np.ndarray) -> str:
    """``error`` (a one-line TempocodecError), ``equal`` (the undamaged decode) or what else happened."""
    try:
        decoded = open_store(store, UV).radiance.values
    except TempocodecError as err:
        return "error" if str(err) and "\n" not in str(err) else f"multi-line error: {err!r:.200}"
    except Exception as err:
        return f"{type(err).__name__}: {err!s:.200}"
    return "equal" if np.array_equal(decoded, reference, equal_nan=True) else "silent garbage"


@pytest.mark.parametrize("fmt", [3, 2], ids=["v3-shard", "v2-chunk"])
def test_damaged_radiance_objects_are_refused_or_decode_unchanged(stores, fmt):
    references = {recorded: open_store(stores[(fmt, recorded)], UV).radiance.values for recorded in (True, False)}
    counts: Counter[tuple[str, str, str]] = Counter()
    bad = []
    start = time.monotonic()
    for seed in range(MUTATIONS):
        kind = KINDS[seed % len(KINDS)]
        for recorded in (True, False):
            if kind == "missing" and not recorded:
                continue
            store = stores[(fmt, recorded)]
            saved = mutate(store, fmt, kind, np.random.default_rng(seed))
            try:
                result = outcome(store, references[recorded])
                if recorded and seed % 5 == 0 and verify_store(store, progress=False).ok:
                    bad.append((seed, kind, "verify called the damaged store whole"))
            finally:
                for path, data in saved.items():
                    path.write_bytes(data)
            counts[(kind, "record" if recorded else "no record", result)] += 1
            if result not in ("error", "equal") or (recorded and result != "error"):
                bad.append((seed, kind, recorded, result))
    elapsed = time.monotonic() - start
    print(f"\nfuzz v{fmt}: {MUTATIONS} mutations in {elapsed:.1f} s")
    for (kind, level, result), n in sorted(counts.items()):
        print(f"  {kind:15s} {level:10s} {result:8s} {n}")
    assert not bad, bad
    assert elapsed < TIME_LIMIT_S
    assert sum(counts.values()) == 2 * MUTATIONS - sum(1 for s in range(MUTATIONS) if KINDS[s % len(KINDS)] == "missing")
