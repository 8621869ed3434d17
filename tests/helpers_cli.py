"""Shared helpers of the CLI tests: run a command in-process and check that it failed with one line."""

import json
import subprocess
import sys

from click.testing import CliRunner, Result

from tempocodec.cli import main

NEVER_FOR_SHORT_COMMANDS = ("matplotlib", "torch", "distributed", "dask.distributed")
"""Libraries that ``--help``, ``info`` and ``query`` have no use for (figures, training, a cluster)."""


def run_cli(*args: object) -> Result:
    """``tempocodec ARGS...`` in-process (arguments turned into strings)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The command exited 2 with one line of output (no traceback) holding each fragment; returns that line."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def modules_after_cli(*commands: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter holds after ``import tempocodec.cli`` and each command (its arguments) run in it
    with click's runner, one after the other; a command that fails fails the caller's test."""
    code = ("import json, sys, tempocodec.cli; from click.testing import CliRunner\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    result = CliRunner().invoke(tempocodec.cli.main, args)\n"
            "    assert result.exit_code == 0, result.output\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(list(commands))], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """Those of ``packages`` (or their sub-modules, ``dask.distributed`` for ``dask``) among ``modules``."""
    return [p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules)]
