"""The ``rkdsc`` command line: one subcommand group per area of the library."""

from __future__ import annotations

import importlib
import logging

import typer

from rkdsc_core.cli import channel, data, models, nas
from rkdsc_core.cli.train import eval_app, train_app

__all__ = ["app", "main"]

app = typer.Typer(
    rich_markup_mode=None,  # plain help: units like [dB] stay (sub-apps inherit it)
    name="rkdsc",
    help="RKD-SC: semantic communication by robust knowledge distillation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(channel.app, name="channel")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(nas.app, name="nas")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


def mount_services() -> None:
    """Add ``rkdsc up``, ``demo`` and ``serve`` when the ``services`` package is installed.

    Imported here, not at module level: ``rkdsc_core`` never depends on ``services``.
    """
    try:
        module = importlib.import_module("services.cli")
    except ModuleNotFoundError as err:
        if err.name in ("services", "services.cli"):
            return
        raise
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mount_services()
    app()
