"""Outputs written whole or not at all: each one is built under a hidden sibling name and moved into place at the end.

The partial output of ``DIR/NAME`` is ``DIR/.NAME.partial-PID-TOKEN`` (PID: the writing process; TOKEN: 8 random hex
digits, so that writers in one process never meet). When the writing block ends it is renamed to ``NAME``; when the
block raises it is removed. A process killed with SIGKILL leaves it behind: the next writer of ``NAME`` removes the
partials of processes that no longer exist.

The final rename never replaces what another writer put at ``NAME`` meanwhile: a file is moved with ``link``, which
fails on any existing name, and a directory with ``rename``, which fails on a file or a non-empty directory. An
existing ``NAME`` is replaced only where the caller passes a :class:`Replaceable` that recognises it (``--overwrite``
of a store, of a model directory, ...); anything else is refused and left untouched. File system faults (a read-only
directory, a parent that is a file, a full disk) are one-line :class:`TempocodecError` messages naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tempocodec.errors import TempocodecError

PARTIAL = ".partial-"
_STALE_INFIXES = (PARTIAL, ".tmp-")  # ".tmp-": the partial files of earlier versions' writers
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


@dataclass(frozen=True)
class Replaceable:
    """The existing outputs a writer may replace: those ``ours`` accepts; ``what`` names them in a refusal."""

    ours: Callable[[Path], bool]
    what: str


ANY_FILE = Replaceable(lambda path: path.is_file(), "a regular file")


def is_empty_dir(path: Path) -> bool:
    """Whether ``path`` is a directory with nothing in it (replacing it loses nothing)."""
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def check_target(dst: Path, replace: Replaceable | None) -> None:
    """Raise unless ``dst`` is free, or holds something that ``replace`` may replace (None: nothing may be)."""
    if not os.path.lexists(dst):
        return
    if replace is None:
        raise TempocodecError(f"{dst} exists: pass --overwrite to replace it")
    if not replace.ours(dst):
        raise TempocodecError(f"{dst} exists and is not {replace.what}: refusing to replace it (left untouched)")


def atomic_file(dst: str | os.PathLike, *, replace: Replaceable | None = None) -> contextlib.AbstractContextManager[Path]:
    """A context manager yielding a new empty file beside ``dst`` to write; it becomes ``dst`` (synced to disk) when
    the block ends, and is removed if the block raises. ``replace``: which existing ``dst`` may be replaced."""
    return _atomic(Path(dst), replace, _new_file)


def atomic_dir(dst: str | os.PathLike, *, replace: Replaceable | None = None) -> contextlib.AbstractContextManager[Path]:
    """A context manager yielding a new empty directory beside ``dst`` to fill; it becomes ``dst`` when the block
    ends, and is removed if the block raises. ``replace``: which existing ``dst`` may be replaced."""
    return _atomic(Path(dst), replace, os.mkdir)


@contextlib.contextmanager
def _atomic(dst: Path, replace: Replaceable | None, create: Callable[[Path], None]) -> Iterator[Path]:
    """Check ``dst``, clean its stale partials, create its partial with ``create``, yield it, then move it into place."""
    check_target(dst, replace)
    _make_parent(dst)
    remove_stale_partials(dst)
    tmp = dst.with_name(f".{dst.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        create(tmp)
    except OSError as err:
        raise TempocodecError(f"{dst}: cannot write in {dst.parent}: {_fault(err)}") from None
    try:
        yield tmp
        _commit(tmp, dst, replace)
    except OSError as err:
        _remove(tmp)
        if _inside(err.filename, tmp):  # a fault writing the partial itself (a full disk, ...), not reading an input
            raise TempocodecError(f"{dst}: cannot write: {_fault(err)}") from None
        raise
    except BaseException:
        _remove(tmp)
        raise


def _inside(filename: object, tmp: Path) -> bool:
    """Whether the file an OSError names is ``tmp`` or lies under it."""
    if not isinstance(filename, (str, os.PathLike)):
        return False
    return Path(os.path.abspath(filename)).is_relative_to(os.path.abspath(tmp))


def _new_file(path: Path) -> None:
    """Create the empty file ``path``, failing if anything is there."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _make_parent(dst: Path) -> None:
    """Create the directory of ``dst`` (and its parents), or say in one line why it cannot be."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in (dst.parent, *dst.parent.parents) if p.is_file()), None)
        fault = f"{blocker} is a file, not a directory" if blocker is not None else _fault(err)
        raise TempocodecError(f"{dst}: cannot create its directory {dst.parent}: {fault}") from None


def remove_stale_partials(dst: Path) -> None:
    """Remove the partial outputs of ``dst`` whose writing process no longer exists (one killed with SIGKILL)."""
    for infix in _STALE_INFIXES:
        prefix = f".{dst.name}{infix}"
        for leftover in dst.parent.glob(f"{glob.escape(prefix)}*"):
            pid = leftover.name[len(prefix):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                _remove(leftover)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _commit(tmp: Path, dst: Path, replace: Replaceable | None) -> None:
    """Move the finished ``tmp`` to ``dst``: onto a free name exclusively, over an existing one only as ``replace`` allows."""
    is_dir = tmp.is_dir()
    try:
        if not is_dir:
            _fsync(tmp)
        if replace is not None and os.path.lexists(dst):
            check_target(dst, replace)
            _replace(tmp, dst, is_dir)
        else:
            _move_exclusive(tmp, dst, is_dir)
    except FileExistsError:
        raise TempocodecError(f"{dst} was created by another writer while this one ran: "
                              "left as it is, this output discarded") from None
    except OSError as err:
        raise TempocodecError(f"{dst}: cannot move the finished output into place: {_fault(err)}") from None
    with contextlib.suppress(OSError):  # the rename itself on disk; not every file system syncs a directory
        _fsync(dst.parent)


def _replace(tmp: Path, dst: Path, is_dir: bool) -> None:
    """Put ``tmp`` in the place of the existing ``dst``."""
    if not is_dir:
        os.replace(tmp, dst)  # one atomic step for a file
        return
    old = dst.with_name(f".{dst.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")  # stale if this process dies now
    os.rename(dst, old)
    try:
        _move_exclusive(tmp, dst, is_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old, dst)  # put the earlier output back
        raise
    _remove(old)


def _move_exclusive(tmp: Path, dst: Path, is_dir: bool) -> None:
    """Rename ``tmp`` to ``dst``; FileExistsError where ``dst`` exists, never replacing it."""
    if not is_dir:
        try:
            os.link(tmp, dst)
        except FileExistsError:
            raise
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            _rename_if_free(tmp, dst)  # a file system without hard links (FAT, some network mounts)
            return
        os.unlink(tmp)
        return
    try:
        _rename_if_free(tmp, dst)  # rename itself refuses a file or a non-empty directory at dst
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        raise


def _rename_if_free(tmp: Path, dst: Path) -> None:
    """``rename`` after checking that ``dst`` is free."""
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(tmp, dst)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a file or a directory tree, as far as possible (used on the way out of a failure)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _fault(err: OSError) -> str:
    """What went wrong, in words (``Permission denied``, ``Read-only file system``, ...)."""
    return err.strerror or " ".join(str(err).split()) or type(err).__name__
