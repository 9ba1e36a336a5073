"""The stderr console and the one progress bar every long step uses (cache build, embedding, training,
indexing, descriptors), on the ground floor so that any package may show progress without importing the CLI.

Progress goes to stderr, so stdout holds only a command's result (one JSON document with ``--json``). It is
shown only when asked for (commands pass ``progress=not as_json``): as a bar when stderr is a terminal, and
as one plain line every 10 s when it is a log file or a pipe (no control characters), so that a long step
never goes quiet.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


from stylespace.utils import plain_console

console = plain_console(stderr=True)
PLAIN_EVERY_S = 10.0  # a log's longest silence during a long step


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class _PlainLines:
    """The bar's stand-in for a log: every ``every`` seconds, one line per running task (done / total, elapsed,
    time left), from a background thread so that a slow step (one long batch) still writes its line."""

    def __init__(self, every: float):
        self.every = every
        self.tasks: dict[int, dict] = {}
        self.next_handle = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stylespace-progress", daemon=True)

    def __enter__(self) -> "_PlainLines":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=1.0)

    def add_task(self, description: str, total: int, info: str = "") -> int:
        with self.lock:
            handle = self.next_handle
            self.next_handle += 1
            self.tasks[handle] = {"description": description, "total": total, "done": 0, "info": info,
                                  "started": time.perf_counter()}
        return handle

    def update(self, handle: int, advance: int, info: str | None = None) -> None:
        with self.lock:
            task = self.tasks.get(handle)
            if task is not None:
                task["done"] += advance
                if info is not None:
                    task["info"] = info

    def remove_task(self, handle: int) -> None:
        with self.lock:
            self.tasks.pop(handle, None)

    def lines(self) -> list[str]:
        now = time.perf_counter()
        with self.lock:
            tasks = [dict(t) for t in self.tasks.values()]
        lines = []
        for task in tasks:
            elapsed = now - task["started"]
            share = task["done"] / task["total"] if task["total"] else 0.0
            left = f", about {_duration(elapsed * (1 - share) / share)} left" if 0 < share < 1 else ""
            info = f" ({task['info']})" if task["info"] else ""
            lines.append(f"{task['description']}: {task['done']:,} / {task['total']:,} ({100 * share:.0f} %), "
                         f"{_duration(elapsed)} so far{left}{info}")
        return lines

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            for line in self.lines():
                console.print(line, markup=False, highlight=False, soft_wrap=True)


class ProgressBar:
    """A Rich progress bar on stderr with any number of tasks, or nothing when disabled.

    >>> with ProgressBar(True) as bar:
    ...     task = bar.start("epoch 1/3", total=100)
    ...     bar.advance(task, 5, info="loss 0.41")
    ...     bar.stop(task)
    """

    def __init__(self, enabled: bool, plain_every: float | None = None):
        self.enabled = bool(enabled)
        self.plain_every = PLAIN_EVERY_S if plain_every is None else plain_every
        self.bar = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                                transient=True)
            self.bar.__enter__()
        elif self.enabled:
            self.bar = _PlainLines(self.plain_every).__enter__()
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
