"""`python -m anpr.exchange ...`: the exchange commands on their own (what the tests start as processes).

The same commands are part of the main `anpr` CLI; this entry point avoids importing the rest of it.
"""

from __future__ import annotations

import logging

import typer

from anpr.exchange.cli import register

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Partner customs exchange.")
register(app)


@app.callback()
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    app()
