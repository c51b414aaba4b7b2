"""What every grokrun command shares: its consoles, its one-line errors (exit 2), its exit statuses, and the
list of commands the app is built from (grokrun.cli builds it; grokrun.cli_read adds the commands that read).
"""

from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
EXIT_CODES = {"completed": 0, "stopped_at_target": 0, "diverged": 1, "interrupted": 130}
COMMANDS: list[tuple[Any, dict]] = []  # (function, how to give it the config flags), in --help's order


def fail(message: str) -> NoReturn:
    """A mistake the user can fix: one line, exit status 2, no traceback."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def command(config_flags: bool = True, exclude: tuple[str, ...] = (), text: bool = False):
    """A command of the app; with ``config_flags``, its ``**values`` receives every config flag but ``exclude`` by
    Python name (as text, with ``text``: a sweep's lists and ranges)."""
    def register(func):
        COMMANDS.append((func, {"config_flags": config_flags, "exclude": exclude, "text": text}))
        return func
    return register


def check_reporting(threshold: float, fmt: str) -> None:
    from grokrun.plot import FORMATS

    if not 0 < threshold <= 1:
        fail(f"--threshold must be in (0, 1], got {threshold}")
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
