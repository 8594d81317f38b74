"""The local framework: reader -> input queue -> N worker threads -> output queue -> collector.

It plays the original design's CloudKon_Main: the reader thread is the client, the threads
are the workers, and the calling thread collects. Bundles of tasks, not single tasks, go
through the queues, and both queues are bounded, so memory stays flat however long the
workload is. SIGINT and SIGTERM stop the run cleanly: running tasks are ended, nothing new
starts, and what finished is summarised.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable

from cloudkon.config import RunConfig
from cloudkon.errors import CloudKonError
from cloudkon.executor import Executor
from cloudkon.model import ResultBundle
from cloudkon.summary import Summary
from cloudkon.workload import BadLine, Workload

log = logging.getLogger(__name__)

_END = None  # put on the input queue once per worker when the workload is exhausted
_WORKER_DONE = "worker-done"  # put on the output queue by each worker as it exits
_POLL_SECONDS = 0.1  # how often blocked threads look whether the run is stopping


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
        self.on_total = on_total  # told the exact task count once the reader has it
        self.summary = Summary(config.job_id, config.workers)
        self.signal_received: int | None = None
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        # Bounded: a few bundles waiting per worker keep every worker busy.
        self._inq: queue.Queue = queue.Queue(maxsize=2 * config.workers)
        self._outq: queue.Queue = queue.Queue(maxsize=4 * config.workers)

    def run(self) -> Summary:
        """Run the workload to its end (or until a signal) and return the summary."""
        started = time.monotonic()
        handlers = self._install_signal_handlers()
        threads = [threading.Thread(target=self._read, name="cloudkon-reader", daemon=True)]
        threads += [
            threading.Thread(target=self._work, args=(f"local-{i}",), name=f"cloudkon-worker-{i}",
                             daemon=True)
            for i in range(self.config.workers)
        ]
        try:
            for t in threads:
                t.start()
            self._collect()
        finally:
            self._restore_signal_handlers(handlers)
            self._stop.set()
            self.executor.cancel()
            self._join(threads)
        self.summary.wall_seconds = time.monotonic() - started
        self._take_workload_counts()
        if self._errors:
            raise self._errors[0]
        return self.summary

    # The client: stream the workload into the input queue.
    def _read(self) -> None:
        cfg = self.config
        try:
            for bundle in self.workload.bundles(cfg.job_id, cfg.bundle_size, cfg.bundle_ms):
                bundle.sent_at = time.time()
                if not self._put(self._inq, bundle):
                    return
            if self.on_total is not None:
                self.on_total(self.workload.tasks)
            for _ in range(cfg.workers):
                if not self._put(self._inq, _END):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, re-raised there
            if not isinstance(exc, CloudKonError):
                log.error("reading %s failed", cfg.workload, exc_info=exc)
            self._errors.append(exc)
            self._stop.set()

    # A worker: take bundles, run their tasks, put the results.
    def _work(self, name: str) -> None:
        job_id = self.config.job_id
        run_bundle = self.executor.run_bundle
        try:
            while not self._stop.is_set():
                try:
                    bundle = self._inq.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if bundle is _END:
                    break
                results = run_bundle(job_id, bundle.tasks)
                if results:
                    self._outq.put(ResultBundle(job_id, bundle.seq, results, bundle.sent_at, name))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, re-raised there
            log.error("worker %s failed", name, exc_info=exc)
            self._errors.append(exc)
            self._stop.set()
        finally:
            self._outq.put(_WORKER_DONE)

    # The collector: the calling thread drains the output queue until every worker is done.
    def _collect(self) -> None:
        running = self.config.workers
        add = self.summary.add
        on_results = self.on_results
        while running:
            if self.signal_received is not None and not self._stop.is_set():
                log.warning("stopping: ending running tasks, starting no more")
                self.summary.interrupted = True
                self._stop.set()
                self.executor.cancel()
            try:
                item = self._outq.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is _WORKER_DONE:
                running -= 1
                continue
            add(item)
            if on_results is not None:
                on_results(item)

    def _join(self, threads: list[threading.Thread]) -> None:
        """Wait for the threads, draining the output queue so no worker stays blocked on it
        (the collector may have left early, e.g. when the results file failed)."""
        for t in threads:
            while t.is_alive():
                t.join(_POLL_SECONDS)
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._outq.get_nowait()

    def _put(self, q: queue.Queue, item) -> bool:
        """Put, waiting for room; False if the run is stopping instead."""
        while True:
            try:
                q.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                if self._stop.is_set():
                    return False

    def _take_workload_counts(self) -> None:
        w, s = self.workload, self.summary
        s.tasks_read, s.bad_lines = w.tasks, w.bad_lines
        s.sleep_tasks, s.sleep_ms = w.sleep_tasks, w.sleep_ms

    def _on_signal(self, signum, frame) -> None:
        # Only a flag: the collector loop sees it within _POLL_SECONDS and acts.
        self.signal_received = signum

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(handlers: dict) -> None:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
