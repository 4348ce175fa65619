"""The command line and what it draws: the Typer app, the live dashboard, text pictures,
report charts and the bench command.

The top tier: it may import everything below it (engine, backends, letters); nothing imports it.
"""

from microconv.cli.app import app, main

__all__ = ["app", "main"]
