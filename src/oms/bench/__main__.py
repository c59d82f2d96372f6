"""`python -m oms.bench …` runs `oms bench …` (until the `oms` command registers it)."""

import typer

from oms.bench.cli import register

app = typer.Typer(add_completion=False)
register(app)


@app.callback()
def _main() -> None:
    """OMS benchmarks."""


app()
