"""The command map: every command and subcommand the README names, each answering --help."""

import typer.main
from typer.testing import CliRunner

from paretohqd.cli import app

COMMANDS = {"data prepare", "reward train", "score", "select", "run", "plan", "compare", "evaluate", "report", "generate", "export",
            "serve", "judge"}


def _commands(group, prefix="") -> set[str]:
    out = set()
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)
        out |= _commands(cmd, f"{prefix}{name} ") if sub else {f"{prefix}{name}"}
    return out


def test_command_map_is_complete_and_each_has_help():
    assert _commands(typer.main.get_command(app)) == COMMANDS
    for command in COMMANDS:
        res = CliRunner().invoke(app, [*command.split(), "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, (command, res.output)
