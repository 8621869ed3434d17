"""Packaging: the wheel carries the released models, and the user's data path never imports torch."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers_cli import NEVER_FOR_SHORT_COMMANDS, loaded, modules_after_cli

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_released_models(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (the test extra)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("tempocodec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    released = sorted(p.relative_to(ROOT / "models") for p in (ROOT / "models").rglob("*") if p.is_file())
    assert released, "models/ holds no file"
    for path in released:
        assert f"tempocodec/models/{path.as_posix()}" in names, path
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "tempocodec.vae = tempocodec.codec:VAECodec" in text and "tempocodec_vae = tempocodec.codec:VAENumcodec" in text


def test_released_model_is_found_by_name():
    from tempocodec.runtime.artifacts import known_models, load_model, resolve_model

    assert "tempo-vae-uv" in known_models()
    art = load_model(resolve_model("tempo-vae-uv"))
    assert (art.band, art.n_channels, art.latent_channels) == ("band_290_490_nm", 1028, 32)
    assert "Headline:" in (art.path / "model_card.md").read_text(encoding="utf-8")


def test_data_path_modules_do_not_import_torch_or_matplotlib():
    code = ("import sys, tempocodec.cli, tempocodec.runtime.store, tempocodec.runtime.query, tempocodec.evaluation.run, "
            "tempocodec.evaluation.summary, tempocodec.codec.latents; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def _imports_torch(path: Path) -> bool:
    """Whether the module at ``path`` has an ``import torch…`` or ``from torch… import`` statement anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "torch" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            return True
    return False


def test_only_the_training_package_imports_torch():
    package = ROOT / "tempocodec"
    importers = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if _imports_torch(p)}
    assert "training/vae.py" in importers  # the check sees the imports it is meant to see
    assert sorted(p for p in importers if not p.startswith("training/")) == []


def test_the_cli_module_and_help_import_no_data_library():
    modules = modules_after_cli(["--help"], ["query", "--help"])
    assert loaded(modules, (*NEVER_FOR_SHORT_COMMANDS, "dask", "xarray", "zarr", "onnxruntime", "scipy", "numpy",
                            "rich")) == []


def test_info_imports_no_plotting_training_or_cluster_library():
    store = next((ROOT / "tests" / "fixture" / "stores").glob("*/v3.zarr"))
    modules = modules_after_cli(["info", str(store)], ["info", "--json", str(store)])
    assert "zarr" in modules and loaded(modules, (*NEVER_FOR_SHORT_COMMANDS, "dask.array", "scipy")) == []
