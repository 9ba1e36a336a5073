"""Micro-batching: queries that arrive together are answered by one forward pass and one index search.

On a CPU, embedding 32 images at once costs a few times what embedding one does, and FAISS searches a
batch of queries with one matrix product; a server answering concurrent clients one by one wastes
both. :class:`QueryBatcher` runs a single worker thread that takes whatever queries are waiting (up to
``max_batch``), answers them in one call, and hands each caller its own answer. A lone query is answered
at once (no waiting for company), so batching adds no latency when the server is idle.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from stylespace.utils import StylespaceError, at_least, validate

_STOP = object()


class QueryBatcher:
    """Answer queries in batches on one worker thread.

    Args:
        answer_batch: ``answer_batch(queries) -> answers``, one answer per query, in order.
        max_batch: the most queries answered by one call.
        name: the worker thread's name (shows in stack dumps).
    """

    def __init__(self, answer_batch: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 32,
                 name: str = "query-batcher"):
        validate([at_least("max_batch", max_batch, 1)])
        self.answer_batch = answer_batch
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()
        self.batches = 0  # answered batches and queries, for /stats and tests
        self.queries = 0

    def submit(self, query: Any) -> Future:
        """Queue ``query``; the returned future holds its answer (or the exception answering raised)."""
        if not self._worker.is_alive():
            raise StylespaceError("the query batcher is stopped")
        future: Future = Future()
        self._queue.put((query, future))
        return future

    def __call__(self, query: Any) -> Any:
        """Answer one query, waiting for it (from a thread; async code awaits :meth:`submit`'s future)."""
        return self.submit(query).result()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the queries already queued are answered."""
        self._queue.put((_STOP, None))
        self._worker.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()  # blocks while idle
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(query is _STOP for query, _ in batch)
            work = [(query, future) for query, future in batch if query is not _STOP]
            if work:
                self._answer(work)
            if stop:
                return

    def _answer(self, work: list[tuple[Any, Future]]) -> None:
        live = [(query, future) for query, future in work if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            answers = self.answer_batch([query for query, _ in live])
            if len(answers) != len(live):
                raise RuntimeError(f"answer_batch returned {len(answers)} answers for {len(live)} queries")
        except BaseException as exc:  # every caller of the batch learns why, and the worker goes on
            for _, future in live:
                future.set_exception(exc)
            return
        self.batches += 1
        self.queries += len(live)
        for (_, future), answer in zip(live, answers):
            future.set_result(answer)
