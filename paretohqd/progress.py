"""One progress-bar style for every long step: count, rate and time left."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f}/s" if task.speed else "-/s")


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                    TextColumn("ETA"), TimeRemainingColumn())
