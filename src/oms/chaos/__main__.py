"""`python -m oms.chaos …` runs `oms chaos …` (until the `oms` command registers it)."""

import typer

from oms.chaos.cli import register

app = typer.Typer(add_completion=False)
register(app)


@app.callback()
def _main() -> None:
    """OMS chaos suite."""


app()
