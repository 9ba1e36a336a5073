"""Decoding uploads at a bounded cost: a pixel budget per image and a bounded number of decodes at once.

An upload's cost is known from its header before a pixel is decoded (:func:`stylespace.data.images.probe_image`):
the pixels it decodes at (a JPEG at 1/2, 1/4 or 1/8 scale, anything else whole). So:

* over ``heavy_pixels`` it is *heavy*: it waits for one of ``heavy_workers`` threads that run at the
  lowest CPU priority (nice 19 on Linux) and start at most ``heavy_per_second`` uploads a second, so a
  few clients posting large images queue behind one another instead of taking the cores honest searches
  need; there, one over ``decoded_pixels`` is refused (422, naming the limit) without being decoded.
  (Refused uploads wait their turn too: refusing is cheap, but a client posting one back to back would
  otherwise be answered as fast as it can ask, a flood of requests costing a millisecond each);
* the rest is decoded at once by one of ``workers`` threads.

Each lane holds at most ``max_waiting`` (``max_heavy_waiting``) uploads in its queue; past that the
upload is answered 503 with ``Retry-After`` (:class:`Busy`), so a flood never grows memory without bound.
"""
from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from stylespace.data.images import DEFAULT_BUDGET, UPLOAD_PIXELS, WORK_PIXELS, PixelBudget
from stylespace.service.errors import ApiError
from stylespace.utils import above, at_least, validate

_STOP = object()


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """What decoding uploads may cost the server.

    Attributes:
        decoded_pixels: the most pixels one upload may decode at (read from its header); over it: 422.
            The default keeps one upload under 100 MB and 100 ms of CPU on this 2-core machine (the dearest
            kinds at the limit, 2000 x 2000 RGBA and 16-bit PNGs: 72 ms / 35 MB and 67 ms / 53 MB;
            benchmarks/bench_uploads.py, docs/service.md).
        working_pixels: the most pixels of any array the canonical view makes after decoding (PixelBudget.working).
        heavy_pixels: uploads decoding at more pixels than this go to the heavy lane.
        workers: threads decoding ordinary uploads (0 = one per CPU core).
        heavy_workers: threads decoding heavy uploads, at the lowest CPU priority.
        max_waiting: ordinary uploads that may wait for a thread; more: 503 with Retry-After.
        max_heavy_waiting: heavy uploads that may wait; more: 503 with Retry-After.
        heavy_per_second: the most heavy uploads started (decoded or refused) per second.
    """

    decoded_pixels: int = UPLOAD_PIXELS
    working_pixels: int = WORK_PIXELS
    heavy_pixels: int = 1_000_000
    workers: int = 0
    heavy_workers: int = 1
    max_waiting: int = 64
    max_heavy_waiting: int = 4
    heavy_per_second: float = 4.0

    def __post_init__(self) -> None:
        validate([
            above("heavy_per_second", self.heavy_per_second, 0),
            *(at_least(name, getattr(self, name), 1)
              for name in ("decoded_pixels", "working_pixels", "heavy_pixels", "heavy_workers")),
            *(at_least(name, getattr(self, name), 0) for name in ("workers", "max_waiting", "max_heavy_waiting")),
        ], owner="decode limit")
        self.budget  # validates the pixel budget too

    @property
    def budget(self) -> PixelBudget:
        return PixelBudget(decoded=self.decoded_pixels, working=self.working_pixels)


class Busy(ApiError):
    """A lane's queue is full: answer 503 and ask the client to come back after ``retry_after`` seconds."""

    def __init__(self, lane: str, retry_after: int):
        super().__init__(503, "busy", f"the server is busy decoding other {lane} uploads; try again in {retry_after} s",
                         headers={"Retry-After": str(retry_after)})
        self.lane = lane
        self.retry_after = retry_after


class DecodeLane:
    """``workers`` threads taking jobs from a queue that holds at most ``max_waiting`` of them.

    Args:
        name: what the lane decodes (``ordinary``, ``heavy``): in thread names and Busy messages.
        workers: worker threads.
        max_waiting: jobs that may wait for a worker; :meth:`submit` raises :class:`Busy` past that.
        nice: CPU priority the workers lower themselves to (Linux; 0 = unchanged).
        per_second: the most jobs started per second, all workers together (None = no limit).
    """

    def __init__(self, name: str, workers: int, max_waiting: int, nice: int = 0, per_second: float | None = None):
        self.name = name
        self.workers = workers
        self.max_waiting = max_waiting
        self.nice = nice
        self.interval = 0.0 if per_second is None else 1.0 / per_second
        self._next_start = 0.0  # monotonic time the next job may start (per_second)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.waiting = 0  # jobs queued and not yet taken by a worker
        self.running = 0
        self.done = 0
        self.refused = 0
        self._seconds = 0.0  # summed job time, for the Retry-After estimate
        self._threads = [threading.Thread(target=self._run, name=f"stylespace-decode-{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        """Queue ``fn(*args)``; the future holds its result. Raises :class:`Busy` when the queue is full."""
        with self._lock:
            if self.waiting + self.running >= self.workers + self.max_waiting:
                self.refused += 1
                raise Busy(self.name, self.retry_after())
            self.waiting += 1
        future: Future = Future()
        self._queue.put((fn, args, future))
        return future

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free (at least 1)."""
        mean = self._seconds / self.done if self.done else 0.1
        return max(1, math.ceil(mean * (self.waiting + self.running) / max(self.workers, 1)))

    def stats(self) -> dict:
        return {"workers": self.workers, "max_waiting": self.max_waiting, "running": self.running,
                "waiting": self.waiting, "done": self.done, "refused_busy": self.refused}

    def close(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._queue.put((_STOP, (), None))
        for thread in self._threads:
            thread.join(timeout)

    def _run(self) -> None:
        if self.nice:
            try:  # on Linux a thread is a task with its own priority; lowering one's own needs no privilege
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):
                pass
        while True:
            fn, args, future = self._queue.get()
            if fn is _STOP:
                return
            if self.interval:
                with self._lock:
                    now = time.monotonic()
                    start = max(now, self._next_start)
                    self._next_start = start + self.interval
                time.sleep(start - now)  # waits without using the CPU; the job keeps its place
            with self._lock:
                self.waiting -= 1
                self.running += 1
            started = time.perf_counter()
            result = error = None
            live = future.set_running_or_notify_cancel()
            if live:
                try:
                    result = fn(*args)
                except BaseException as exc:  # the caller learns why; the worker goes on
                    error = exc
            # The place is free before the caller hears back, so its next upload finds room.
            with self._lock:
                self.running -= 1
                self.done += 1
                self._seconds += time.perf_counter() - started
            if live:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)


class UploadDecoder:
    """Decode uploads into canonical views within :class:`DecodeLimits`, on two lanes (see the module docstring).

    Args:
        decode: ``decode(data, size, field, budget[, views]) -> result`` (the upload decoder; raises for bad
            input; ``views`` only for an upload submitted with query views).
        probe: ``probe(data, size, field) -> decoded pixels`` from the header (raises for bad input).
        limits: the :class:`DecodeLimits`.
    """

    def __init__(self, decode: Callable, probe: Callable, limits: DecodeLimits = DecodeLimits()):
        self.decode_fn = decode
        self.probe_fn = probe
        self.limits = limits
        self.budget = limits.budget
        self.ordinary = DecodeLane("ordinary", limits.workers or os.cpu_count() or 1, limits.max_waiting)
        self.heavy = DecodeLane("heavy", limits.heavy_workers, limits.max_heavy_waiting, nice=19,
                                per_second=limits.heavy_per_second)

    def submit(self, data: bytes, size: tuple[int, int], field: str = "image", views=None) -> Future:
        """Start decoding ``data`` for a view of ``size`` (and, with ``views``, a
        :class:`stylespace.data.query_views.QueryViews`, the query's other views too: the decoder is then called
        with it); the future holds the result or the refusal. Raises :class:`Busy` when the ordinary lane is full
        (a heavy upload's future may hold Busy too)."""
        outer: Future = Future()
        first = self.ordinary.submit(self._ordinary, data, size, field, views)

        def forward(done: Future) -> None:
            try:
                result = done.result()
            except BaseException as exc:
                outer.set_exception(exc)
                return
            if result is not _HEAVY:
                outer.set_result(result)
                return
            try:
                second = self.heavy.submit(self._heavy, data, size, field, views)
            except Busy as exc:
                outer.set_exception(exc)
                return
            second.add_done_callback(lambda d: _copy(d, outer))

        first.add_done_callback(forward)
        return outer

    def _ordinary(self, data: bytes, size: tuple[int, int], field: str, views=None):
        # The header's format errors are answered here at once; the size is judged on the heavy lane.
        pixels = self.probe_fn(data, size, field, DEFAULT_BUDGET)
        if pixels > self.limits.heavy_pixels:
            return _HEAVY
        return self._decode(data, size, field, views)

    def _heavy(self, data: bytes, size: tuple[int, int], field: str, views=None):
        self.probe_fn(data, size, field, self.budget)  # over the budget: refused here, in turn, undecoded
        return self._decode(data, size, field, views)

    def _decode(self, data: bytes, size: tuple[int, int], field: str, views):
        if views is None:
            return self.decode_fn(data, size, field, self.budget)
        return self.decode_fn(data, size, field, self.budget, views)

    def stats(self) -> dict:
        return {"decoded_pixels": self.limits.decoded_pixels, "heavy_pixels": self.limits.heavy_pixels,
                "heavy_per_second": self.limits.heavy_per_second,
                "ordinary": self.ordinary.stats(), "heavy": self.heavy.stats()}

    def close(self) -> None:
        self.ordinary.close()
        self.heavy.close()


_HEAVY = object()


def _copy(source: Future, target: Future) -> None:
    try:
        target.set_result(source.result())
    except BaseException as exc:
        target.set_exception(exc)
