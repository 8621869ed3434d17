"""``python -m tempocodec``: the command line, as the ``tempocodec`` console script."""

from tempocodec.cli import main

main(prog_name="tempocodec")
