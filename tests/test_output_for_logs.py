"""Output read from a log or a pipe (issue 29): no wrapping, a plain progress line every few seconds, and an
estimate before a long demo step."""
from __future__ import annotations

import io
import time

from rich.console import Console

from stylespace import progress
from stylespace.utils import LOG_WIDTH, plain_console


def test_a_console_that_is_not_a_terminal_does_not_wrap(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    console = plain_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal and console.width == LOG_WIDTH
    buffer = io.StringIO()
    console.file = buffer
    command = "$ stylespace serve demo/index --model /a/rather/long/path/to/models/default --port 8000 " * 3
    console.print(command)
    assert buffer.getvalue().count("\n") == 1


def test_progress_in_a_log_is_a_plain_line_every_interval(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buffer, width=LOG_WIDTH, force_terminal=False))
    with progress.ProgressBar(True, plain_every=0.05) as bar:
        task = bar.start("decoding 1,000 images", 1000)
        bar.advance(task, 250, info="loss 0.4")
        time.sleep(0.3)  # no advance meanwhile: a line is still written (a long batch does not go quiet)
        bar.stop(task)
    lines = [line for line in buffer.getvalue().splitlines() if line]
    assert len(lines) >= 2 and "\x1b" not in buffer.getvalue()
    assert lines[0].startswith("decoding 1,000 images: 250 / 1,000 (25 %), ") and "left" in lines[0]
    assert "(loss 0.4)" in lines[0]


def test_progress_asked_off_writes_nothing(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buffer, width=LOG_WIDTH, force_terminal=False))
    with progress.steps(False, 10, "nothing") as advance:
        advance(5)
        time.sleep(0.05)
    assert buffer.getvalue() == ""


def test_a_long_demo_step_says_how_long_first(monkeypatch):
    from stylespace.cli import demo

    buffer = io.StringIO()
    monkeypatch.setattr(demo, "out", Console(file=buffer, width=LOG_WIDTH, force_terminal=False))
    steps = demo._Steps()
    steps.warn_long(demo.estimate("image cache", 44_441), "to decode every image once")
    steps.warn_long(demo.estimate("index", 500))  # seconds: nothing said
    text = buffer.getvalue()
    assert text.count("\n") == 1 and "about 2 minutes on a 2-core CPU" in text and "every 10 s" in text
