"""The one progress bar of the commands (rendering, evaluation), and a silent stand-in for library callers."""

from __future__ import annotations

from typing import Any


def progress_bar(description: str = "{task.description}") -> Any:
    """A rich ``Progress`` (a context manager): description, bar, done/total, elapsed and remaining time.

    Args:
        description: rich template of the text column, e.g. ``"Rendering offset {task.description}"``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())


class NoProgress:
    """Takes a ``Progress``'s calls and shows nothing (for callers that pass no bar)."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass
