"""The local framework: client -> input queue -> N worker threads -> output queue -> client.

It plays the original design's CloudKon_Main. The calling thread is the client: it streams
the workload into the input queue as bundles of tasks (CloudKon's task bundling) and
collects bundles of results from the output queue in between, never more than
``4 x workers`` bundles in flight, so memory stays flat however long the workload is. The
worker threads execute. One client thread rather than a reader and a collector: every
thread wake-up costs context switches and GIL hand-offs, which on short shell tasks cost
more than the tasks themselves.

SIGINT and SIGTERM stop the run cleanly: running tasks are ended, nothing new starts, and
what finished is summarised.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator

from cloudkon.config import RunConfig
from cloudkon.executor import Executor
from cloudkon.model import Bundle, ResultBundle
from cloudkon.summary import Summary
from cloudkon.workload import BadLine, Workload

log = logging.getLogger(__name__)

_END = None  # put on the input queue once per worker: exit
_POLL_SECONDS = 0.1  # how often the client, waiting for results, looks for a signal
# One running, the rest waiting: a worker hands results over only when fewer than one
# bundle per worker waits, so the client refills several at a time, and none waits.
_BUNDLES_IN_FLIGHT_PER_WORKER = 4


class LocalRunner:
    """Runs one workload on worker threads. ``run()`` returns the summary."""

    def __init__(
        self,
        config: RunConfig,
        on_bad_line: Callable[[BadLine], None] | None = None,
        on_results: Callable[[ResultBundle], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.workload = Workload(config.workload, on_bad_line=on_bad_line)
        self.executor = Executor(config.task_timeout, config.tail_bytes)
        self.on_results = on_results
        self.on_total = on_total  # told the exact task count once the whole file is read
        self.summary = Summary(config.job_id, config.workers)
        self.signal_received: int | None = None
        self._stopping = False
        # Bounded by the client, which keeps at most a few bundles per worker in flight.
        self._inq: queue.SimpleQueue = queue.SimpleQueue()
        self._outq: queue.SimpleQueue = queue.SimpleQueue()

    def run(self) -> Summary:
        """Run the workload to its end (or until a signal) and return the summary."""
        started = time.monotonic()
        handlers = self._install_signal_handlers()
        workers = [
            threading.Thread(target=self._work, args=(f"local-{i}",), name=f"cloudkon-worker-{i}",
                             daemon=True)
            for i in range(self.config.workers)
        ]
        try:
            for t in workers:
                t.start()
            self._submit_and_collect()
        finally:
            self._restore_signal_handlers(handlers)
            if self._stopping or any(t.is_alive() for t in workers):
                self._stopping = True
                self.executor.cancel()
            for _ in workers:
                self._inq.put(_END)
            for t in workers:
                t.join()
            self.summary.wall_seconds = time.monotonic() - started
            self._take_workload_counts()
        return self.summary

    def _submit_and_collect(self) -> None:
        cfg = self.config
        bundles: Iterator[Bundle] | None = self.workload.bundles(
            cfg.job_id, cfg.bundle_size, cfg.bundle_ms)
        window = _BUNDLES_IN_FLIGHT_PER_WORKER * cfg.workers
        in_flight = 0
        add = self.summary.add
        on_results = self.on_results
        while True:
            while bundles is not None and in_flight < window and not self._stopping:
                bundle = next(bundles, None)
                if bundle is None:
                    bundles = None
                    if self.on_total is not None:
                        self.on_total(self.workload.tasks)
                    break
                bundle.sent_at = time.time()
                self._inq.put(bundle)
                in_flight += 1
            if not in_flight and (bundles is None or self._stopping):
                return
            if self.signal_received is not None and not self._stopping:
                log.warning("stopping: ending running tasks, starting no more")
                self.summary.interrupted = True
                self._stopping = True
                self.executor.cancel()
            try:
                batch = self._outq.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            in_flight -= len(batch)
            for results in batch:
                if results.results:
                    add(results)
                    if on_results is not None:
                        on_results(results)

    def _work(self, name: str) -> None:
        """A worker: take bundles, run their tasks, put a result bundle for each.

        Result bundles are handed to the client in batches: whenever the input queue runs
        low (the client must refill it) or the worker would have to wait. Every hand-off
        wakes the client thread, which on short shell tasks costs more than the task.
        """
        job_id = self.config.job_id
        run_bundle = self.executor.run_bundle
        inq, outq = self._inq, self._outq
        low = self.config.workers
        done: list[ResultBundle] = []
        while True:
            if done and inq.qsize() <= low:
                outq.put(done)
                done = []
            try:
                bundle = inq.get_nowait()
            except queue.Empty:
                if done:
                    outq.put(done)
                    done = []
                bundle = inq.get()
            if bundle is _END:
                if done:
                    outq.put(done)
                return
            results = []
            try:
                if not self._stopping:
                    results = run_bundle(job_id, bundle.tasks)
            except Exception:  # a bug: report it, and keep the client's count of bundles right
                log.exception("worker %s: bundle %d failed", name, bundle.seq)
            finally:
                done.append(ResultBundle(job_id, bundle.seq, results, bundle.sent_at, name))

    def _take_workload_counts(self) -> None:
        w, s = self.workload, self.summary
        s.tasks_read, s.bad_lines = w.tasks, w.bad_lines
        s.sleep_tasks, s.sleep_ms = w.sleep_tasks, w.sleep_ms

    def _on_signal(self, signum, frame) -> None:
        # Only a flag: the client loop sees it within _POLL_SECONDS and acts.
        self.signal_received = signum

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(handlers: dict) -> None:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
