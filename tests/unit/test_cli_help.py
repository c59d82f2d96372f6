"""`oms --help` and every command's help: a description for every option and argument, the environment
variable behind an option shown as such, and no type noise such as `<bool>` for flags."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from oms.cli import app

runner = CliRunner()


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command with its path (Typer's own copy of click: its classes are not `click`'s)."""
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


COMMANDS = list(commands(typer.main.get_command(app)))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "oms" for p, _ in COMMANDS])
def test_every_option_and_argument_says_what_it_is(path: tuple[str, ...], command: Any) -> None:
    assert command.help, path
    undescribed = [p.name for p in command.params if not getattr(p, "help", None) and not p.hidden]
    assert undescribed == [], path
    shown = runner.invoke(app, [*path, "--help"])
    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.output
    text = " ".join(shown.output.split())
    for param in command.params:
        if getattr(param, "show_envvar", False) and param.envvar and not param.hidden:
            assert f"[env var: {param.envvar}" in text, (path, param.name)


def test_up_names_the_setting_of_every_port_it_takes() -> None:
    shown = " ".join(runner.invoke(app, ["up", "--help"]).output.split())
    for name in ("AUTH", "ORDER", "ACCOUNT", "BACKOFFICE"):
        assert f"[env var: OMS_{name}_PORT]" in shown
    assert "OMS_* variables" in shown  # where the others are


def test_version() -> None:
    from importlib.metadata import version

    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0
    assert shown.output == f"oms {version('oms')}\n"


def test_admin_create_asks_for_the_password_without_an_empty_default() -> None:
    result = runner.invoke(
        app,
        ["admin", "create", "newadmin"],
        input="secret-password\nsecret-password\n",
        # Servers of one's own that do not answer: the prompt is what is tested, nothing is started.
        env={"OMS_AUTH_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/auth"},
    )
    assert "Password for the new admin: " in result.output
    assert "[]" not in result.output
