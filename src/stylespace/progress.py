"""The stderr console and the one progress bar every long step uses (cache build, embedding, training,
indexing, descriptors), on the ground floor so that any package may show progress without importing the CLI.

Progress goes to stderr, so stdout holds only a command's result (one JSON document with ``--json``). A bar
is shown only when asked for (commands pass ``progress=not as_json``) and when stderr is a terminal: a log
file or a pipe gets no control characters.
"""
from __future__ import annotations

from typing import Callable

from rich.console import Console

console = Console(stderr=True)


class ProgressBar:
    """A Rich progress bar on stderr with any number of tasks, or nothing when disabled.

    >>> with ProgressBar(True) as bar:
    ...     task = bar.start("epoch 1/3", total=100)
    ...     bar.advance(task, 5, info="loss 0.41")
    ...     bar.stop(task)
    """

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled) and console.is_terminal
        self.bar = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                                transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def start(self, description: str, total: int):
        """A new task of ``total`` steps; returns its handle (None when disabled)."""
        return None if self.bar is None else self.bar.add_task(description, total=total, info="")

    def advance(self, task, steps: int = 1, info: str | None = None) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, advance=steps, **({} if info is None else {"info": info}))

    def stop(self, task) -> None:
        if self.bar is not None and task is not None:
            self.bar.remove_task(task)


class steps:
    """One task's bar: ``with steps(enabled, total, "decoding 44,441 images") as advance: advance(k)``."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.bar, self.total, self.description = ProgressBar(enabled), total, description

    def __enter__(self) -> Callable[[int], None]:
        self.bar.__enter__()
        task = self.bar.start(self.description, self.total)
        return lambda k: self.bar.advance(task, k)

    def __exit__(self, *exc) -> bool:
        return self.bar.__exit__(*exc)
