"""The ``tempocodec`` command line (click). Each command is a thin wrapper over a library call."""

from __future__ import annotations

import sys

import click

from tempocodec.errors import TempocodecError


class _Group(click.Group):
    """A click group that turns :class:`TempocodecError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TempocodecError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="tempocodec")
def main() -> None:
    """Compress TEMPO Level-1B radiance with a variational autoencoder, and read Level-2 products from the latents."""
