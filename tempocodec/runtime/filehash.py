"""sha256 checks of model files that a later process need not repeat: a record of each file hashed, by file stat.

A file is checked against the sha256 its manifest gives. After a successful hash, the file's stat (size, modification
and status-change times in ns, inode, device) is recorded with that sha256, in memory and in :func:`cache_file`; a
later check of a file whose stat equals its record trusts the record instead of hashing. Writing a file changes its
modification and status-change times, and the status-change time cannot be set back from user space (POSIX, where
``st_ctime`` is that time), so a changed file is hashed again. A file changed less than :data:`RACY_NS` before it was
hashed is not recorded: a second write within the same timestamp tick could leave its stat unchanged.

The record is a cache: a missing, corrupt or unwritable cache file only means hashing again, never an error. It is
as trusted as the user's other files (whoever can write it could also edit the user's configuration).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.errors import TempocodecError

CACHE_ENV = "TEMPOCODEC_CACHE_DIR"
CACHE_FORMAT = "tempocodec-file-hashes/1"
RACY_NS = 2_000_000_000
"""A file modified this recently (ns) before its hash is not recorded (file systems' timestamps can be this coarse)."""
MAX_RECORDS = 4096
"""Records kept in the cache file, the most recent ones."""

Record = list[int | str]
"""``[size, mtime_ns, ctime_ns, inode, device, sha256]`` of a file."""

_lock = threading.Lock()
_records: dict[str, Record] | None = None  # the cache file's records (read once per process) and this process's
_unsaved: set[str] = set()  # the paths of records made by this process and not yet written


def cache_dir() -> Path | None:
    """Where the cache lives: ``$TEMPOCODEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/tempocodec``, else
    ``~/.cache/tempocodec`` (relative values are ignored); None when no absolute location can be made."""
    own = os.environ.get(CACHE_ENV, "")
    if os.path.isabs(own):
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.expanduser(os.path.join("~", ".cache"))
    return Path(base) / "tempocodec" if os.path.isabs(base) else None


def cache_file() -> Path | None:
    """The JSON file of the records (see the module docstring), in :func:`cache_dir`."""
    folder = cache_dir()
    return None if folder is None else folder / "file-hashes.json"


def check_file(path: Path, sha256: str) -> None:
    """Raise unless the file ``path`` has the hex ``sha256``; hashed only when no record vouches for it."""
    try:
        stat = path.stat()
    except OSError as err:
        raise TempocodecError(f"{path}: cannot read ({err.strerror or err})") from None
    if not _vouched(path, stat, sha256):
        read_verified(path, sha256)


def read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of the file ``path``, read once, checked to have the hex ``sha256`` (hashed unless a record made
    for the file's stat, before and after the read, vouches for them); raise when they do not."""
    try:
        with open(path, "rb") as file:
            before = os.fstat(file.fileno())
            data = file.read()
            after = os.fstat(file.fileno())
    except OSError as err:
        raise TempocodecError(f"{path}: cannot read ({err.strerror or err})") from None
    stable = _stamp(before) == _stamp(after)
    if stable and _vouched(path, before, sha256):
        return data
    if digest(data) != sha256:
        raise TempocodecError(f"{path}: sha256 differs from the manifest (file changed or corrupt)")
    if stable:
        _remember(path, before, sha256)
    return data


def digest(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def save() -> None:
    """Write this process's new records into :func:`cache_file` (atomically, merged with what is there); silently
    nothing when there are none or the file cannot be written."""
    target = cache_file()
    with _lock:
        if not _unsaved or target is None:
            return
        ours = {key: _known()[key] for key in _unsaved}
        _unsaved.clear()
    merged = {key: record for key, record in _read(target).items() if key not in ours} | ours  # ours last: kept
    kept = dict(list(merged.items())[-MAX_RECORDS:])
    try:
        with atomic_file(target, replace=ANY_FILE) as tmp:
            tmp.write_text(json.dumps({"format": CACHE_FORMAT, "files": kept}), encoding="utf-8")
    except (OSError, TempocodecError):
        pass  # a cache that cannot be written is one that is not used


def _stamp(stat: os.stat_result) -> list[int]:
    """The parts of a file's stat that a write changes."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _vouched(path: Path, stat: os.stat_result, sha256: str) -> bool:
    """Whether a record says the file ``path`` with ``stat`` has ``sha256``."""
    key = str(path.resolve())
    with _lock:
        return _known().get(key) == [*_stamp(stat), sha256]


def _remember(path: Path, stat: os.stat_result, sha256: str) -> None:
    """Record that the file ``path`` with ``stat`` has ``sha256``, unless it changed within :data:`RACY_NS`."""
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < RACY_NS:
        return
    key = str(path.resolve())
    with _lock:
        records = _known()
        records.pop(key, None)  # re-inserted last: the most recent records are the ones kept
        records[key] = [*_stamp(stat), sha256]
        _unsaved.add(key)


def _known() -> dict[str, Record]:
    """The records of this process (those of the cache file, read on first use); call holding ``_lock``."""
    global _records
    if _records is None:
        target = cache_file()
        _records = _read(target) if target is not None else {}
    return _records


def _read(target: Path) -> dict[str, Record]:
    """The records in the cache file ``target``; none when it is missing or not one."""
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
    return {k: v for k, v in files.items() if isinstance(v, list)} if isinstance(files, dict) else {}
