"""Shared helpers of the CLI tests: run a command in-process and check that it failed with one line."""

from click.testing import CliRunner, Result

from tempocodec.cli import main


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
