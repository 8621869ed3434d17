"""One band spelling across commands, info --json and untruncated tables, training commands without torch."""

import json
import sys

import pytest
from helpers_cli import assert_one_line_error, run_cli

from tempocodec.runtime.store import compress_granule
from tempocodec.simulator import write_simulated

pytest_plugins = ["tiny_model_fixture"]

MODEL = "tiny1028"


@pytest.fixture(scope="module")
def store(tiny_models, tmp_path_factory):
    granule = write_simulated(tmp_path_factory.mktemp("g"), 12, 20, seed=4, bands="uv")[0]
    out = tmp_path_factory.mktemp("s") / "a_store_with_a_rather_long_name_that_would_be_cut.zarr"
    compress_granule(granule, out, model=MODEL, progress=False)
    return out


def test_info_json_and_untruncated_table(store):
    result = run_cli("info", store, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    names = {(v["group"], v["name"]) for v in data["variables"]}
    assert ("band_290_490_nm", "ground_pixel_quality_flag") in names
    assert data["bands"]["band_290_490_nm"]["model"] == MODEL and data["total_stored_bytes"] > 0
    table = run_cli("info", store)  # CliRunner's terminal is 80 columns wide
    rows = [line for line in table.output.splitlines() if "│" in line]
    assert table.exit_code == 0 and rows and not any("…" in row for row in rows)
    assert str(store) in table.output and {n for _, n in names} <= {c.strip() for r in rows for c in r.split("│")}


@pytest.mark.parametrize("command", [["simulate", "OUT", "--rows", "2", "--cols", "2", "--seed", "1"],
                                     ["query", "STORE"], ["evaluate", "A.nc", "B.zarr"], ["compress", "A.nc", "B.zarr"]])
def test_every_band_option_has_one_spelling(command, tmp_path):
    args = [str(tmp_path / a) if a.isupper() or "." in a else a for a in command]
    bad = run_cli(*args, "--band", "infrared")
    assert bad.exit_code == 2 and "'infrared': choose one of uv, vis" in bad.output
    assert "[uv|vis" in run_cli(command[0], "--help").output


def test_group_names_are_still_accepted(tmp_path):
    out = tmp_path / "sim"
    result = run_cli("simulate", out, "--rows", "2", "--cols", "3", "--seed", "1", "--band", "band_540_740_nm", "--quiet")
    assert result.exit_code == 0, result.output
    assert run_cli("simulate", out, "--band", "uv", "--help").exit_code == 0


@pytest.mark.parametrize("command", [["train", "--data", "D", "--out", "R"], ["export", "R", "O", "--name", "x"],
                                     ["train-block", "D", "R"], ["export-block", "R", "D", "O", "--name", "x"],
                                     ["train-probes", "--data", "D", "--model", "m"]])
def test_training_commands_without_torch_say_what_to_install(command, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    args = [str(tmp_path / a) if len(a) == 1 and a.isupper() else a for a in command]
    assert_one_line_error(run_cli(*args), f"{command[0]} needs PyTorch", "pip install 'tempocodec[train]'")
