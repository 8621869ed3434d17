"""A store names its model and the reader chooses where models come from: names are looked up only in trusted
directories (TEMPOCODEC_MODELS, the config file, the bundled models), paths only where the user typed them; graphs must
be self-contained; the attribute dtypes a store records are limited to those of netCDF attributes."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

# The graph tests build ONNX files with the onnx package (the train extra); skip the module, with this reason, without it.
pytest.importorskip("onnx", reason="needs onnx to build test graphs: pip install -e '.[train]'")

import onnx
import xarray as xr
import zarr
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from tiny_model import model_variant

from tempocodec.cli import main
from tempocodec.errors import TempocodecError
from tempocodec.runtime.artifacts import (
    MODELS_ENV,
    find_model,
    identity_sha256,
    known_models,
    load_model,
    resolve_model,
    session,
    sha256_bytes,
)
from tempocodec.runtime.onnx_wire import external_tensors
from tempocodec.runtime.store import compress_granule, decompress_store
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]  # the session fixture tiny_models

UV = "band_290_490_nm"
REFUSED = "not a plain model name"
UNKNOWN = "no model directory by that name in the trusted model directories"


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    return write_simulated(tmp_path_factory.mktemp("granule"), 24, 40, seed=11, bands="uv")[0]


@pytest.fixture(scope="module", params=[3, 2], ids=["v3", "v2"])
def stores(request, granule, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"store_v{request.param}") / "g.zarr"
    compress_granule(granule, out, model="tiny1028", zarr_format=request.param, progress=False)
    return out


@pytest.fixture(scope="module")
def untrusted(tiny_models, tmp_path_factory) -> Path:
    """A model ``loose`` outside every trusted directory."""
    return model_variant(tiny_models.small, tmp_path_factory.mktemp("untrusted") / "loose", shift=0.3, name="loose")


def _metadata_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.name in ("zarr.json", ".zarray", ".zmetadata", ".zattrs")]


def _rename(doc, name: str) -> None:
    """Set ``model`` to ``name`` in every dict of ``doc`` that also holds a ``model_sha256``."""
    if isinstance(doc, dict):
        if "model_sha256" in doc:
            doc["model"] = name
        for value in doc.values():
            _rename(value, name)
    elif isinstance(doc, list):
        for value in doc:
            _rename(value, name)


def store_naming(store: Path, dst: Path, name: str) -> Path:
    """A copy of ``store`` whose codec configurations (and band summary) name the model ``name``."""
    shutil.copytree(store, dst)
    for meta in _metadata_files(dst):
        doc = json.loads(meta.read_text())
        _rename(doc, name)
        meta.write_text(json.dumps(doc))
    return dst


def assert_every_read_refused(store: Path, tmp_path: Path, *fragments: str) -> None:
    """Raw zarr, xarray, decompress_store and the CLI's decompress all refuse ``store`` with a one-line error."""
    reads = [
        lambda: zarr.open_group(store, mode="r")[f"{UV}/radiance"][:8, :8],
        lambda: xr.open_zarr(store, group=UV, consolidated=True)["radiance"].values,
        lambda: decompress_store(store, tmp_path / "out.nc", progress=False),
    ]
    for read in reads:
        with pytest.raises(TempocodecError) as err:
            read()
        assert all(f in str(err.value) for f in fragments) and "\n" not in str(err.value), str(err.value)
    result = CliRunner().invoke(main, ["decompress", str(store), str(tmp_path / "cli.nc"), "--quiet"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert all(f in result.output for f in fragments), result.output


# --------------------------------------------------------------------------------------------------- store names


def _place(model: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(model, dst))


@pytest.mark.parametrize("case", ["absolute", "relative", "dot-relative", "parent", "dotdot", "hidden"])
def test_a_store_naming_a_path_is_refused_even_with_a_matching_model_there(stores, tiny_models, tmp_path, monkeypatch,
                                                                          case):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    model = tiny_models.full  # the store's own model, so its sha256 and statistics match
    if case == "absolute":
        name = str(_place(model, tmp_path / "elsewhere" / "m"))
    elif case == "relative":
        _place(model, work / "sub" / "m")
        name = "sub/m"
    elif case == "dot-relative":
        _place(model, work / "m")
        name = "./m"
    elif case == "parent":
        _place(model, tmp_path / "m")
        name = "../m"
    elif case == "dotdot":
        (_place(model, tmp_path / "dd") / "x").mkdir()
        monkeypatch.chdir(tmp_path / "dd" / "x")  # '..' is a model directory
        name = ".."
    else:
        _place(model, tmp_path / "trusted" / ".m")  # hidden, even inside a trusted directory
        monkeypatch.setenv(MODELS_ENV, f"{tmp_path / 'trusted'}{os.pathsep}{tiny_models.root}")
        name = ".m"
    store = store_naming(stores, tmp_path / "s.zarr", name)
    assert_every_read_refused(store, tmp_path, REFUSED, repr(name))


def test_a_plain_name_is_not_looked_up_in_the_working_directory(stores, tiny_models, tmp_path, monkeypatch):
    _place(tiny_models.full, tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    store = store_naming(stores, tmp_path / "s.zarr", "m")
    assert_every_read_refused(store, tmp_path, UNKNOWN, "'m'")


def test_find_model_takes_names_only(tiny_models, tmp_path, monkeypatch):
    sha = load_model(tiny_models.small).sha256
    monkeypatch.chdir(tiny_models.root)
    for name in [str(tiny_models.small), "./tiny", "tiny/", "..", "", ".tiny", "a\\b", "c:tiny", "x" * 200, 3]:
        with pytest.raises(TempocodecError, match=REFUSED):
            find_model(name, sha)
    assert find_model("tiny", sha).path == tiny_models.small.resolve()


def test_a_model_must_have_a_plain_name(tiny_models, tmp_path):
    model = _place(tiny_models.small, tmp_path / "m")
    manifest = json.loads((model / "manifest.json").read_text())
    (model / "manifest.json").write_text(json.dumps({**manifest, "name": "../m"}))
    with pytest.raises(TempocodecError, match=r"name '../m' is not a plain model name"):
        load_model(model)


# --------------------------------------------------------------------------------------------------- trusted places


def _config(tmp_path: Path, monkeypatch, text: str) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "tempocodec" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_models_are_found_by_name_in_env_and_config_directories_in_order(tiny_models, untrusted, tmp_path,
                                                                         monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    config = _config(tmp_path, monkeypatch, 'model_dirs = ["rel", "~/mine"]\n')
    in_config = _place(untrusted, config.parent / "rel" / "loose")
    in_home = _place(untrusted, home / "mine" / "loose2")
    in_env = _place(untrusted, tmp_path / "env" / "loose")
    sha = load_model(untrusted).sha256
    assert find_model("loose2", sha).path == in_home.resolve()
    assert resolve_model("loose") == in_config  # relative to the config file, not to the working directory
    monkeypatch.setenv(MODELS_ENV, f"{tmp_path / 'env'}{os.pathsep}{tiny_models.root}")
    assert resolve_model("loose") == in_env and resolve_model("tiny") == tiny_models.small
    assert {"loose", "loose2", "tiny"} <= set(known_models())


@pytest.mark.parametrize(("text", "fragment"), [
    ("model_dirs = [", "unreadable configuration"),
    ('model_dir = ["x"]\n', "unknown keys ['model_dir']"),
    ('model_dirs = "x"\n', "model_dirs 'x'"),
])
def test_a_bad_config_file_is_a_one_line_error(tiny_models, tmp_path, monkeypatch, text, fragment):
    path = _config(tmp_path, monkeypatch, text)
    with pytest.raises(TempocodecError, match=re.escape(str(path))) as err:
        resolve_model("tiny")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_user_name_prefers_the_trusted_model_over_the_working_directory(tiny_models, tmp_path, monkeypatch):
    _place(tiny_models.other, tmp_path / "tiny")  # same name, other statistics
    monkeypatch.chdir(tmp_path)
    assert resolve_model("tiny") == tiny_models.small
    assert resolve_model("./tiny") == Path("./tiny")  # a path the user typed


def test_cli_model_option_takes_a_directory_path(granule, tiny_models, tmp_path):
    model = model_variant(tiny_models.full, tmp_path / "dir" / "loose1028", shift=0.4, name="loose1028")
    out = tmp_path / "g.zarr"
    result = CliRunner().invoke(main, ["compress", str(granule), str(out), "--model", str(model), "--quiet"])
    assert result.exit_code == 0, result.output
    assert zarr.open_group(out, mode="r").attrs["tempocodec"]["bands"][UV]["model"] == "loose1028"  # a name, no path
    result = CliRunner().invoke(main, ["decompress", str(out), str(tmp_path / "g.nc"), "--quiet"])
    assert result.exit_code == 0, result.output  # the model the user chose serves its stores in this process


# --------------------------------------------------------------------------------------------------- graphs


def _graph(*, initializers=(), nodes=(), sparse=(), functions=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph(list(nodes) or [helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y],
                              list(initializers), sparse_initializer=list(sparse))
    return helper.make_model(graph, functions=list(functions), opset_imports=[helper.make_opsetid("", 17)])


def _external(name: str, location: str = "w.bin") -> TensorProto:
    tensor = numpy_helper.from_array(np.arange(4, dtype=np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _placed_external() -> list[onnx.ModelProto]:
    """Graphs with one external tensor named ``w`` in each place a ModelProto can hold a tensor."""
    constant = helper.make_node("Constant", [], ["c"], value=_external("w"))
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["b"])], "b", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])], [_external("w")])
    if_node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    sparse = helper.make_sparse_tensor(_external("w"), numpy_helper.from_array(np.array([0], np.int64), "i"), [4])
    function = helper.make_function("local", "f", ["a"], ["b"], [constant], [helper.make_opsetid("", 17)])
    return [_graph(initializers=[_external("w")]), _graph(nodes=[constant]), _graph(nodes=[if_node]),
            _graph(sparse=[sparse]), _graph(functions=[function])]


def test_external_tensors_are_found_wherever_a_graph_holds_them(tiny_models):
    for model in _placed_external():
        assert set(external_tensors(model.SerializeToString())) == {"w"}
    assert external_tensors(_graph(initializers=[numpy_helper.from_array(np.ones(4, np.float32), "w")])
                            .SerializeToString()) == []
    assert external_tensors((tiny_models.full / "decoder.onnx").read_bytes()) == []
    with pytest.raises(ValueError):
        external_tensors(b"\x0a\xff\xff")


def _with_encoder(model: Path, graph: onnx.ModelProto) -> Path:
    """Replace the encoder of ``model`` by ``graph`` and record its sha256 (a consistent, new model identity)."""
    (model / "encoder.onnx").write_bytes(graph.SerializeToString())
    manifest_path = model / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["encoder.onnx"] = sha256_bytes((model / "encoder.onnx").read_bytes())
    manifest["sha256"] = identity_sha256(manifest["files"])
    manifest_path.write_text(json.dumps(manifest))
    return model


@pytest.mark.parametrize("location", ["w.bin", "../secret.bin", "/etc/hostname"])
def test_a_graph_with_external_data_is_refused(tiny_models, tmp_path, location):
    model = _with_encoder(_place(tiny_models.small, tmp_path / "m"), _graph(initializers=[_external("w", location)]))
    (model / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    art = load_model(model)
    with pytest.raises(TempocodecError, match=r"encoder.onnx: tensors \['w'\] keep their data in external files"):
        session(art, "encoder")


def test_a_graph_name_cannot_leave_the_model_directory(tiny_models):
    art = load_model(tiny_models.small)
    for which in ["../tiny1028/decoder", "/etc/x", "probes/../../x"]:
        with pytest.raises(TempocodecError, match="points outside the model directory"):
            session(art, which)


# --------------------------------------------------------------------------------------------------- attribute dtypes


def _edit_root_attrs(store: Path, dst: Path, edit) -> Path:
    """A copy of ``store`` with ``edit(attributes)`` applied to its root attributes (v3 ``zarr.json`` or v2
    ``.zattrs`` and ``.zmetadata``)."""
    shutil.copytree(store, dst)
    if (dst / "zarr.json").exists():
        doc = json.loads((dst / "zarr.json").read_text())
        edit(doc["attributes"])
        (dst / "zarr.json").write_text(json.dumps(doc))
    else:
        attrs = json.loads((dst / ".zattrs").read_text())
        edit(attrs)
        (dst / ".zattrs").write_text(json.dumps(attrs))
        consolidated = json.loads((dst / ".zmetadata").read_text())
        consolidated["metadata"][".zattrs"] = attrs
        (dst / ".zmetadata").write_text(json.dumps(consolidated))
    return dst


@pytest.mark.parametrize("dtype", ["S2000000000", "U100000", "object", "V8", "(1000,)f8", "bool", "complex128",
                                   "float16", "datetime64[s]", "nonsense", 7])
def test_attribute_dtypes_outside_netcdf_are_refused(stores, tmp_path, dtype):
    def edit(attrs):
        attrs["tempocodec"]["attribute_dtypes"]["/nowhere"] = dtype

    store = _edit_root_attrs(stores, tmp_path / "s.zarr", edit)
    with pytest.raises(TempocodecError, match=r"attribute '/nowhere' has dtype .*netCDF attributes are") as err:
        decompress_store(store, tmp_path / "out.nc", progress=False)
    assert "\n" not in str(err.value)


def test_attribute_values_that_do_not_fit_their_dtype_are_refused(stores, tmp_path):
    def edit(attrs):
        attrs["probe_count"] = 70000
        attrs["tempocodec"]["attribute_dtypes"]["/probe_count"] = "int8"

    store = _edit_root_attrs(stores, tmp_path / "s.zarr", edit)
    with pytest.raises(TempocodecError, match=r"attribute '/probe_count': 70000 is not int8"):
        decompress_store(store, tmp_path / "out.nc", progress=False)


def test_a_non_mapping_dtype_record_is_refused(stores, tmp_path):
    store = _edit_root_attrs(stores, tmp_path / "s.zarr", lambda attrs: attrs["tempocodec"].update(attribute_dtypes=[1]))
    with pytest.raises(TempocodecError, match="attribute_dtypes must map attribute keys to dtype names"):
        decompress_store(store, tmp_path / "out.nc", progress=False)


def test_string_attributes_take_the_width_of_their_values(stores, tmp_path):
    def edit(attrs):
        attrs["label"] = "abc"
        attrs["tempocodec"]["attribute_dtypes"]["/label"] = "U60000"

    store = _edit_root_attrs(stores, tmp_path / "s.zarr", edit)
    out = decompress_store(store, tmp_path / "out.nc", progress=False)
    with xr.open_dataset(out) as ds:
        assert ds.attrs["label"] == "abc"
