"""One console and one progress-bar style for every long step: count, rate and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

console = Console()
"""Where every command prints (tables, step names, progress)."""


class _Rate(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.2f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


def progress_bar(*, unit: str = "items", enabled: bool = True) -> Progress:
    """A bar with count, rate in `unit`s per second and time left; `enabled=False` prints nothing."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(unit),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled)
