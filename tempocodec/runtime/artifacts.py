"""Released model directories (layout in docs/design.md) and their ONNX Runtime sessions, without torch.

A model is found by path or by name: a name is looked up in each directory of the ``TEMPOCODEC_MODELS`` environment
variable (``os.pathsep``-separated), then in :func:`models_dir`; codecs look a model up by name and sha256 with
:func:`find_model`, which first takes a matching model already loaded in the process. :func:`load_model` reads and verifies a directory once
per process; :func:`session` opens one ONNX graph of it, once per process per (model sha256, graph, graph sha256).

A model's identity, the manifest's ``sha256`` that stores record and check, covers only the coding files
(:data:`CODING_FILES`); the manifest's ``files`` lists every file with its own sha256 for integrity checks, so files
added later (probes, a rewritten model card: :func:`record_files`) leave the identity unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from tempocodec.atomic import ANY_FILE, atomic_file
from tempocodec.errors import TempocodecError

MODEL_FORMAT = "tempocodec-model/1"
MODELS_ENV = "TEMPOCODEC_MODELS"
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


def _search_path() -> list[Path]:
    """Directories searched for a model name: those of ``TEMPOCODEC_MODELS``, then :func:`models_dir`."""
    extra = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [*extra, models_dir()]


def known_models() -> list[str]:
    """Names of the model directories (those holding a ``manifest.json``) on the search path, sorted, unique."""
    names = {p.name for d in _search_path() if d.is_dir() for p in d.iterdir() if (p / "manifest.json").is_file()}
    return sorted(names)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The directory of a model given as a directory path or as a name on the search path."""
    path = Path(name_or_path)
    if (path / "manifest.json").is_file():
        return path
    if path.name == str(name_or_path):
        for root in _search_path():
            if (root / path / "manifest.json").is_file():
                return root / path
    known = ", ".join(known_models()) or "none"
    raise TempocodecError(
        f"model {str(name_or_path)!r}: no model directory by that path or name "
        f"(searched {MODELS_ENV} and {models_dir()}; known models: {known})"
    )


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


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
        if name not in self.files:
            raise TempocodecError(f"{self.path}: model {self.name} has no {name} in its manifest")
        if not path.is_file():
            raise TempocodecError(f"{path}: missing (model {self.name} lists it in its manifest)")
        return path


def load_model(model_dir: str | os.PathLike) -> ModelArtifacts:
    """Read and verify the model directory ``model_dir`` (cached per process and manifest modification time).

    Every file the manifest lists is checked against its sha256, except ONNX graphs that are absent: those fail only
    when :func:`session` is asked for them. The graphs present are hashed again when their session is created.
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
    """Model ``name``: the one with ``sha256`` already loaded in this process (from any path), else by name.

    The caller checks the sha256 of a model found by name.
    """
    art = _loaded.get((name, sha256))
    return art if art is not None else load_model(resolve_model(name))


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
    files = {str(k): str(v) for k, v in manifest["files"].items()}
    if identity_sha256(files, str(manifest_path)) != manifest["sha256"]:
        raise TempocodecError(f"{manifest_path}: sha256 does not match the sha256 of its coding files {list(CODING_FILES)}")
    for name, digest in files.items():
        file = path / name
        if name.endswith(".onnx") and not file.exists():
            continue
        if not file.is_file():
            raise TempocodecError(f"{file}: missing (listed in {manifest_path})")
        if sha256_bytes(file.read_bytes()) != digest:
            raise TempocodecError(f"{file}: sha256 differs from the manifest (file changed or corrupt)")
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
    """ONNX Runtime execution providers to use: CUDA first when this onnxruntime build has it, then CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def session(model: ModelArtifacts | str | os.PathLike, which: str) -> ort.InferenceSession:
    """The ONNX Runtime session of graph ``which`` (``"encoder"``, ``"decoder"``, ``"probes/no2_mlp"``, ...) of a model.

    ``model`` is loaded artifacts or a model directory. Sessions are created lazily under a lock and cached per process
    per (model sha256, which, the graph's manifest sha256); they are safe to call from several threads. The graph's
    bytes are checked against the manifest before the session is built from them. Intra-op threads: the CPUs
    available to the process.
    """
    art = model if isinstance(model, ModelArtifacts) else load_model(model)
    key = (art.sha256, which, art.files.get(f"{which}.onnx", ""))
    cached = _sessions.get(key)
    if cached is not None:
        return cached
    with _sessions_lock:
        if key not in _sessions:
            path = art.graph_path(which)
            data = path.read_bytes()
            if sha256_bytes(data) != art.files[f"{which}.onnx"]:
                raise TempocodecError(f"{path}: sha256 differs from the manifest (file changed or corrupt)")
            options = ort.SessionOptions()
            options.intra_op_num_threads = _cpu_count()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                _sessions[key] = ort.InferenceSession(data, sess_options=options, providers=providers())
            except _ORT_ERRORS as err:
                raise TempocodecError(f"{path}: ONNX Runtime cannot load the graph ({err})") from None
        return _sessions[key]


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
