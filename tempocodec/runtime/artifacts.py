"""Released model directories (layout in docs/design.md) and their ONNX Runtime sessions, without torch.

Which models may run: a store names its model, and a name is looked up only in trusted directories (:func:`model_dirs`:
those of the ``TEMPOCODEC_MODELS`` environment variable, ``os.pathsep``-separated, then the ``model_dirs`` of the
user's :func:`config_file`, then :func:`models_dir`). Codecs look a model up by name and sha256 with :func:`find_model`,
which takes only plain names (:func:`check_model_name`: no path, no ``..``, no hidden name), so a store cannot make a
reader run graphs from a path it chose; a sha256 check could not stop that, as the store would supply both. Only a
model the user chose (a ``--model`` option, a Python argument) may be given as a directory path: :func:`resolve_model`.
A model loaded from such a path serves the stores that name it by name and sha256 for the rest of the process.

:func:`load_model` reads and verifies a directory once per process; :func:`session` opens one ONNX graph of it, once
per process per (model sha256, graph, graph sha256), and refuses graphs with external data. A file is hashed once
and then recorded by its stat (:mod:`tempocodec.runtime.filehash`), so later checks, in this process or the next,
hash only the files that changed since. Sessions run on :func:`providers`.

A model's identity, the manifest's ``sha256`` that stores record and check, covers only the coding files
(:data:`CODING_FILES`); the manifest's ``files`` lists every file with its own sha256 for integrity checks, so files
added later (probes, a rewritten model card: :func:`record_files`) leave the identity unchanged.
"""

from __future__ import annotations

import json
import os
import re
import threading
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.cpus import cpu_count
from tempocodec.errors import TempocodecError
from tempocodec.runtime import filehash
from tempocodec.runtime.filehash import digest as sha256_bytes
from tempocodec.runtime.onnx_wire import external_tensors

MODEL_FORMAT = "tempocodec-model/1"
MODELS_ENV = "TEMPOCODEC_MODELS"
PROVIDERS_ENV = "TEMPOCODEC_PROVIDERS"
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ORT_ERRORS = (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf, ort_state.InvalidArgument,
               ort_state.NoSuchFile, ort_state.NotImplemented, ort_state.RuntimeException)
_MANIFEST_KEYS = ("name", "band", "n_channels", "latent_channels", "tile", "downsample", "files", "sha256")
CODING_FILES = ("encoder.onnx", "decoder.onnx", "normalization.npz")

_sessions: dict[tuple[str, str, str], ort.InferenceSession] = {}
_sessions_lock = threading.Lock()
_loaded: dict[tuple[str, str], ModelArtifacts] = {}


def models_dir() -> Path:
    """The released models: ``tempocodec/models/`` inside a wheel, else the repository's top-level ``models/``."""
    package = Path(__file__).resolve().parents[1]
    bundled = package / "models"
    return bundled if bundled.is_dir() else package.parent / "models"


def config_file() -> Path | None:
    """The user's configuration file, ``$XDG_CONFIG_HOME/tempocodec/config.toml`` (``~/.config/...`` when that is unset
    or relative); None when no absolute location can be made (no home directory)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.expanduser(os.path.join("~", ".config"))
    return Path(base) / "tempocodec" / "config.toml" if os.path.isabs(base) else None


def _config_model_dirs() -> list[Path]:
    """The ``model_dirs = ["DIR", ...]`` of :func:`config_file` (none without a file): ``~`` expanded, relative
    entries taken against the file's directory, never the working directory."""
    path = config_file()
    if path is None or not path.is_file():
        return []
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise TempocodecError(f"{path}: unreadable configuration ({err})") from None
    dirs = config.get("model_dirs", [])
    unknown = sorted(set(config) - {"model_dirs"})
    if unknown or not isinstance(dirs, list) or not all(isinstance(d, str) and d for d in dirs):
        raise TempocodecError(f"{path}: expected only model_dirs = [\"DIR\", ...], a list of directory paths "
                              f"(unknown keys {unknown}, model_dirs {dirs!r})")
    return [path.parent / Path(d).expanduser() for d in dirs]


def model_dirs() -> list[Path]:
    """The trusted directories a model name is looked up in, in order: those of ``TEMPOCODEC_MODELS``, the config
    file's ``model_dirs``, then :func:`models_dir`."""
    extra = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [*extra, *_config_model_dirs(), models_dir()]


def known_models() -> list[str]:
    """Names of the model directories (those holding a ``manifest.json``) in :func:`model_dirs`, sorted, unique."""
    names = {p.name for d in model_dirs() if d.is_dir() for p in d.iterdir()
             if _MODEL_NAME.fullmatch(p.name) and (p / "manifest.json").is_file()}
    return sorted(names)


def check_model_name(name: object) -> str:
    """``name`` when it is a plain model name, one that can only select a directory directly inside a trusted
    directory: a letter or digit, then letters, digits, ``.``, ``_``, ``-``, 128 characters at most (so no path
    separator, ``..``, absolute path, drive, empty or hidden name). Raise naming ``name`` otherwise."""
    if isinstance(name, str) and _MODEL_NAME.fullmatch(name):
        return name
    raise TempocodecError(f"model {name!r}: not a plain model name (letters, digits, '.', '_', '-'; no path): a store "
                          f"names its model, which is looked up by name only in the trusted model directories")


def _by_name(name: str) -> Path | None:
    """The directory ``name`` in the first of :func:`model_dirs` that has a model by that name."""
    return next((root / name for root in model_dirs() if (root / name / "manifest.json").is_file()), None)


def _not_found(name_or_path: str) -> TempocodecError:
    """The error for a model that is neither a known name nor (where paths are allowed) a model directory."""
    config = config_file()
    where = ", ".join([MODELS_ENV, *([f"model_dirs of {config}"] if config else []), str(models_dir())])
    return TempocodecError(f"model {name_or_path!r}: no model directory by that name in the trusted model directories "
                           f"({where}; known models: {', '.join(known_models()) or 'none'})")


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The directory of a model the user chose (a ``--model`` option, a Python argument): a plain name found in
    :func:`model_dirs`, else a model directory path, trusted because the user gave it. Not for names read from a store
    (use :func:`find_model`). A name is looked up first, so a directory of the same name in the working directory
    cannot stand in for a trusted model; ``./NAME`` selects that directory."""
    text = os.fspath(name_or_path)
    found = _by_name(text) if _MODEL_NAME.fullmatch(text) else None
    if found is not None:
        return found
    if (Path(text) / "manifest.json").is_file():
        return Path(text)
    raise _not_found(text)


def combined_sha256(files: dict[str, str]) -> str:
    """Hex sha256 of the sorted ``"name:sha"`` lines of ``files`` joined with newlines."""
    text = "\n".join(f"{name}:{files[name]}" for name in sorted(files))
    return sha256_bytes(text.encode("utf-8"))


def identity_sha256(files: dict[str, str], where: str = "manifest") -> str:
    """The model identity (the manifest's ``sha256``): :func:`combined_sha256` of the :data:`CODING_FILES` entries of
    ``files`` (file name -> hex sha256); raise naming ``where`` when one of them is missing."""
    missing = [name for name in CODING_FILES if name not in files]
    if missing:
        raise TempocodecError(f"{where}: files lacks the coding files {missing}")
    return combined_sha256({name: files[name] for name in CODING_FILES})


def record_files(model_dir: str | os.PathLike, names: list[str]) -> dict[str, str]:
    """Hash the files ``names`` (paths relative to ``model_dir``) into the manifest's ``files`` and rewrite the manifest
    atomically; the identity must not change, so coding files are refused. Returns the new ``files``."""
    path = Path(model_dir)
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TempocodecError(f"{manifest_path}: unreadable manifest ({err})") from None
    coding = sorted(set(names) & set(CODING_FILES))
    if coding:
        raise TempocodecError(f"{manifest_path}: {coding} are coding files; changing them would change the model identity")
    files = dict(manifest["files"])
    for name in names:
        try:
            files[name] = sha256_bytes((path / name).read_bytes())
        except OSError as err:
            raise TempocodecError(f"{path / name}: cannot read ({err.strerror or err})") from None
    manifest["files"] = dict(sorted(files.items()))
    with atomic_file(manifest_path, replace=ANY_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest["files"]


@dataclass(frozen=True, eq=False)
class ModelArtifacts:
    """A verified model directory.

    ``mu``, ``sigma``: float32 ``(n_channels,)`` normalization of log radiance. ``tile``: tile side in pixels;
    ``downsample``: pixels per latent cell per side. ``files`` maps file names to their manifest sha256.
    """

    path: Path
    name: str
    band: str
    n_channels: int
    latent_channels: int
    tile: int
    downsample: int
    sha256: str
    mu: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    files: dict[str, str] = field(repr=False)

    def graph_path(self, which: str) -> Path:
        """Path of the ONNX graph ``which`` (``"encoder"``, ``"decoder"``, ...); raise if it is not in the model."""
        name = f"{which}.onnx"
        path = self.path / name
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or "\\" in name:
            raise TempocodecError(f"{self.path}: graph name {which!r} points outside the model directory")
        if name not in self.files:
            raise TempocodecError(f"{self.path}: model {self.name} has no {name} in its manifest")
        if not path.is_file():
            raise TempocodecError(f"{path}: missing (model {self.name} lists it in its manifest)")
        return path


def load_model(model_dir: str | os.PathLike) -> ModelArtifacts:
    """Read and verify the model directory ``model_dir`` (cached per process and manifest modification time).

    Every file the manifest lists is checked against its sha256 (:func:`tempocodec.runtime.filehash.check_file`: not
    hashed again while its stat matches the record of an earlier hash), except ONNX graphs that are absent: those fail
    only when :func:`session` is asked for them.
    """
    path = Path(model_dir).resolve()
    manifest = path / "manifest.json"
    try:
        stamp = manifest.stat().st_mtime_ns
    except OSError:
        raise TempocodecError(f"{manifest}: missing; {path} is not a tempocodec model directory") from None
    art = _load_model(path, stamp)
    _loaded[(art.name, art.sha256)] = art
    return art


def find_model(name: str, sha256: str) -> ModelArtifacts:
    """The model a store names: ``name`` must be a plain name (:func:`check_model_name`), never a path. It is the model
    with ``name`` and ``sha256`` already loaded in this process (one the user chose, from any path), else the directory
    ``name`` in the first of :func:`model_dirs` that has it.

    The caller checks the sha256 of a model found by name.
    """
    art = _loaded.get((check_model_name(name), sha256))
    if art is not None:
        return art
    path = _by_name(name)
    if path is None:
        raise _not_found(name)
    return load_model(path)


@lru_cache(maxsize=32)
def _load_model(path: Path, stamp: int) -> ModelArtifacts:
    """:func:`load_model` for a resolved directory whose manifest has modification time ``stamp`` (ns)."""
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TempocodecError(f"{manifest_path}: unreadable manifest ({err})") from None
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if manifest.get("format") != MODEL_FORMAT or missing:
        raise TempocodecError(
            f"{manifest_path}: not a {MODEL_FORMAT} manifest (format {manifest.get('format')!r}, missing {missing})"
        )
    if not _MODEL_NAME.fullmatch(str(manifest["name"])):
        raise TempocodecError(f"{manifest_path}: name {manifest['name']!r} is not a plain model name "
                              f"(letters, digits, '.', '_', '-'), so stores could not name the model")
    files = {str(k): str(v) for k, v in manifest["files"].items()}
    if identity_sha256(files, str(manifest_path)) != manifest["sha256"]:
        raise TempocodecError(f"{manifest_path}: sha256 does not match the sha256 of its coding files {list(CODING_FILES)}")
    for name, digest in files.items():
        file = path / name
        if name.endswith(".onnx") and not file.exists():
            continue
        if not file.is_file():
            raise TempocodecError(f"{file}: missing (listed in {manifest_path})")
        filehash.check_file(file, digest)
    filehash.save()
    mu, sigma = _read_stats(path / "normalization.npz", int(manifest["n_channels"]))
    return ModelArtifacts(
        path=path,
        name=str(manifest["name"]),
        band=str(manifest["band"]),
        n_channels=int(manifest["n_channels"]),
        latent_channels=int(manifest["latent_channels"]),
        tile=int(manifest["tile"]),
        downsample=int(manifest["downsample"]),
        sha256=str(manifest["sha256"]),
        mu=mu,
        sigma=sigma,
        files=files,
    )


def _read_stats(path: Path, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``mu``, ``sigma`` float32 ``(n_channels,)`` from ``normalization.npz``."""
    try:
        with np.load(path) as stats:
            mu = np.asarray(stats["mu"], dtype=np.float32)
            sigma = np.asarray(stats["sigma"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as err:
        raise TempocodecError(f"{path}: unreadable normalization ({err})") from None
    if mu.shape != (n_channels,) or sigma.shape != (n_channels,):
        raise TempocodecError(f"{path}: mu {mu.shape} and sigma {sigma.shape} must both be ({n_channels},)")
    mu.flags.writeable = False
    sigma.flags.writeable = False
    return mu, sigma


def providers() -> list[str]:
    """ONNX Runtime execution providers every session uses, in order of preference: those of ``TEMPOCODEC_PROVIDERS``
    (comma-separated, e.g. ``CPUExecutionProvider``) when it is set, else CUDA first when this onnxruntime build has
    it, then CPU. Raise naming a requested provider that this build lacks."""
    available = ort.get_available_providers()
    requested = [p.strip() for p in os.environ.get(PROVIDERS_ENV, "").split(",") if p.strip()]
    unknown = [p for p in requested if p not in available]
    if unknown:
        raise TempocodecError(f"{PROVIDERS_ENV}={os.environ[PROVIDERS_ENV]!r}: {', '.join(unknown)} not in this "
                              f"onnxruntime build (available: {', '.join(available)})")
    return requested or [p for p in PREFERRED_PROVIDERS if p in available]


def session(model: ModelArtifacts | str | os.PathLike, which: str) -> ort.InferenceSession:
    """The ONNX Runtime session of graph ``which`` (``"encoder"``, ``"decoder"``, ``"probes/no2_mlp"``, ...) of a model.

    ``model`` is loaded artifacts or a model directory. Sessions are created lazily under a lock and cached per process
    per (model sha256, which, the graph's manifest sha256); they are safe to call from several threads. The graph's
    bytes are read once and checked against the manifest (hashed unless :func:`load_model` just hashed the unchanged
    file, or an earlier process did) before the session is built from them. Providers: :func:`providers`; intra-op
    threads: the CPUs available to the process.
    """
    art = model if isinstance(model, ModelArtifacts) else load_model(model)
    key = (art.sha256, which, art.files.get(f"{which}.onnx", ""))
    cached = _sessions.get(key)
    if cached is not None:
        return cached
    with _sessions_lock:
        if key not in _sessions:
            path = art.graph_path(which)
            data = filehash.read_verified(path, art.files[f"{which}.onnx"])
            filehash.save()
            _check_self_contained(data, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = cpu_count()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                _sessions[key] = ort.InferenceSession(data, sess_options=options, providers=providers())
            except _ORT_ERRORS as err:
                raise TempocodecError(f"{path}: ONNX Runtime cannot load the graph ({err})") from None
        return _sessions[key]


def _check_self_contained(data: bytes, path: Path) -> None:
    """Refuse the graph ``data`` (read from ``path``) when a tensor of it keeps its data in another file.

    ONNX Runtime would open such a file by the ``location`` the graph gives (relative to the model path, or for a graph
    given as bytes to the working directory or not at all, depending on its version), and the manifest does not hash
    it. Rather than trust each runtime version to confine those paths, the rule is that a model's graphs are
    self-contained: :func:`tempocodec.runtime.onnx_wire.external_tensors` reads the protobuf without the ``onnx``
    package and finds every such tensor. Exported graphs are single files (a model far below protobuf's 2 GB limit).
    """
    try:
        external = external_tensors(data)
    except ValueError as err:
        raise TempocodecError(f"{path}: not a readable ONNX graph ({err})") from None
    if external:
        raise TempocodecError(f"{path}: tensors {external[:3]} keep their data in external files; the graphs "
                              f"of a model must be self-contained")


def write_card_section(model_dir: str | os.PathLike, title: str, body: str) -> Path:
    """(Re)write the ``## title`` section of ``MODEL_DIR/model_card.md`` (appended when absent; the rest kept),
    atomically, and record the card's new sha256 in the manifest. Returns the card's path."""
    card = Path(model_dir) / "model_card.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    lines = text.splitlines()
    heading = f"## {title}"
    section = [heading, "", *body.splitlines(), ""]
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        lines += ([""] if lines and lines[-1] else []) + section
    with atomic_file(card, replace=ANY_FILE) as tmp:
        tmp.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    record_files(model_dir, ["model_card.md"])
    return card
