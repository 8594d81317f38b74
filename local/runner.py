"""The local flavour: the worker daemon's loop over in-memory queues and lease store.

``cloudkon run`` is what a fleet does, in one process (as Dramatiq's worker runs over its
stub broker): the calling thread plays the client, streaming the workload into the input
queue as bundles and collecting result bundles from the output queue in between, never
more than a few bundles per worker thread in flight, so memory stays flat however long the
workload is; :class:`worker.daemon.Worker` receives, claims, executes, completes and sends,
with ``--workers`` bundle threads. Bodies and stored results travel as objects
(:data:`cloudkon.codec.IN_PROCESS`): nothing is serialised.

SIGINT and SIGTERM stop the run cleanly: the worker stops hard (running tasks are ended,
nothing new starts, what it held is given back), and what finished, in completed bundles
and in the lease store's partial results, is summarised, with the tasks never read from
the rest of the file counted (for at most UNREAD_COUNT_SECONDS).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Generator

from cloudkon.backends import COMPLETED
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from cloudkon.codec import IN_PROCESS
from cloudkon.config import RunConfig, WorkerConfig
from cloudkon.errors import BadLinesError, WorkloadError
from cloudkon.limits import SQS_MAX_VISIBILITY_SECONDS, UNREAD_COUNT_SECONDS
from cloudkon.model import Bundle, ResultBundle, bundle_key
from cloudkon.results import Resumed
from cloudkon.summary import Summary
from cloudkon.workload import BadLine, Opener, Workload
from worker.daemon import Worker

log = logging.getLogger(__name__)

INPUT_QUEUE = "local-input"
OUTPUT_QUEUE = "local-output"
WORKER_ID = "local"
_POLL_SECONDS = 0.1  # how often the client, waiting for results, looks for a signal
# One running, the rest waiting: each bundle thread finds the next bundle queued as it
# finishes one. The client waits for results until half of them are back, then refills:
# woken once per a few bundles rather than once per bundle, and the threads never starve.
_BUNDLES_IN_FLIGHT_PER_WORKER = 4
# Bundles that take less time than the client takes to wake (`sleep 0`, one by one) are all
# back by then, the threads idle: the window doubles each time, up to this many bundles in
# all (no more than the first window, with many workers), so that the client, and each
# thread, is woken once per many bundles. It halves again, down to the first, once bundles
# take longer than a wake-up (the latency, queued to done, grows with the bundles waiting).
_MOST_BUNDLES_IN_FLIGHT = 128
# ... and it grows only while its bundles hold fewer tasks than this in all: full bundles
# (`sleep 0` by the 256) are woken for rarely enough at the first window, and more of them
# in flight would only hold more memory (and cost the collector more).
_MOST_TASKS_IN_FLIGHT = 4096
_NO_TASKS = "holds no tasks (only blank lines and comments)"


class LocalRunner:
    """Runs one workload on worker threads. ``run()`` returns the summary."""

    def __init__(
        self,
        config: RunConfig,
        on_bad_line: Callable[[BadLine], None] | None = None,
        on_results: Callable[[ResultBundle], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        opener: Opener | None = None,
        resume: Resumed | None = None,
    ) -> None:
        """``opener`` opens the workload (stdin's copy, say) instead of the file
        ``config.workload``, which then only names it in messages. With ``resume`` (GNU
        parallel's --resume), the lines that already have a result there are not run;
        their results count in the summary."""
        self.config = config
        self._opener = opener
        self.resume = resume
        self.workload = Workload(config.workload, on_bad_line=on_bad_line, opener=opener,
                                 skip=resume.lines if resume is not None else None)
        self.on_results = on_results
        self.on_total = on_total  # told the exact task count once the whole file is read
        self.summary = Summary(config.job_id, config.workers)
        self.signal_received: int | None = None
        broker = MemoryBroker()
        self.inbox = broker.create(INPUT_QUEUE, dead_letter=f"{INPUT_QUEUE}-dlq")
        self.outbox = broker.create(OUTPUT_QUEUE)
        self.leases = MemoryLeaseStore()
        # Nobody else receives from these queues: a bundle is never taken over, so its
        # message and lease last as long as SQS would let them.
        self.worker = Worker(self.inbox, broker, self.leases, WorkerConfig(
            worker_id=WORKER_ID, threads=config.workers,
            visibility_seconds=SQS_MAX_VISIBILITY_SECONDS,
            task_timeout=config.task_timeout, tail_bytes=config.tail_bytes,
        ), codec=IN_PROCESS)
        self._in_flight: dict[int, Bundle] = {}  # by seq: sent, no results yet
        self._least_window = _BUNDLES_IN_FLIGHT_PER_WORKER * config.workers
        self._most_window = max(self._least_window, _MOST_BUNDLES_IN_FLIGHT)
        self._window = self._least_window  # how many bundles may be in flight
        # The rest of the workload, once a signal stopped the run: counted, never run.
        self._unread: Generator[Bundle, None, None] | None = None

    def check(self) -> None:
        """Raise WorkloadError unless the workload can run: a readable text file and, with
        ``strict``, every line a task (read through once, nothing run)."""
        cfg = self.config
        Workload(cfg.workload, opener=self._opener).check()
        if cfg.strict:
            checked = Workload(cfg.workload, on_bad_line=self.workload.on_bad_line,
                               opener=self._opener)
            if checked.validate():
                raise BadLinesError(cfg.workload, checked.bad_lines)
            if not checked.tasks:
                raise WorkloadError(cfg.workload, _NO_TASKS)

    def run(self) -> Summary:
        """Run the workload to its end (or until a signal) and return the summary;
        WorkloadError if it held no task at all."""
        started = time.monotonic()
        for bundle in self.resume.bundles if self.resume is not None else ():
            self.summary.add(bundle)
        handlers = self._install_signal_handlers()
        self.worker.start()
        try:
            self._submit_and_collect()
        finally:
            self._restore_signal_handlers(handlers)
            if self.signal_received is None and self._in_flight:  # an error: end it all
                self.worker.stop(hard=True)
            else:
                self.worker.stop()
            self.inbox.close()  # the receiver's poll returns at once
            self.worker.shutdown()
            self.worker.executor.close()  # its task guardian: no task runs any more
            self._collect(wait_seconds=0.0)
            self._recover_unfinished()
            self.summary.wall_seconds = time.monotonic() - started
            self._take_workload_counts()
        self._count_unread()
        summary = self.summary
        if not summary.tasks_read and not summary.interrupted:
            reason = (f"no line is a task ({summary.bad_lines} bad line(s))"
                      if summary.bad_lines else _NO_TASKS)
            raise WorkloadError(self.config.workload, reason)
        return summary

    def _submit_and_collect(self) -> None:
        cfg = self.config
        bundles: Generator[Bundle, None, None] | None = self.workload.bundles(
            cfg.job_id, cfg.bundle_size, cfg.bundle_ms)
        in_flight = self._in_flight
        encode = IN_PROCESS.encode_bundle
        while True:
            batch = []
            while bundles is not None and len(in_flight) < self._window:
                bundle = next(bundles, None)
                if bundle is None:
                    bundles = None
                    if self.on_total is not None:
                        self.on_total(self.workload.tasks)
                    break
                in_flight[bundle.seq] = bundle
                batch.append(bundle)
            if batch:
                sent_at = time.time()  # those sent together enter the queue together
                for bundle in batch:
                    bundle.sent_at = sent_at
                self.inbox.send_batch([encode(bundle, OUTPUT_QUEUE) for bundle in batch])
            if not in_flight and bundles is None:
                return
            if self.signal_received is not None:
                log.warning("stopping: ending running tasks, starting no more")
                self.summary.interrupted = True
                self._unread = bundles
                self.worker.stop(hard=True, signum=self.signal_received)
                return
            self._collect(wait_seconds=_POLL_SECONDS)

    def _collect(self, wait_seconds: float) -> None:
        """Take the result bundles on the output queue into the summary and to
        ``on_results``, waiting up to ``wait_seconds`` for half of those in flight."""
        in_flight = len(self._in_flight)
        if wait_seconds:
            self.outbox.wait_for(max(1, min(in_flight, self._window // 2)), wait_seconds)
        bodies = self.outbox.take(in_flight or 1)
        if not bodies:
            return
        results = list(map(IN_PROCESS.decode_results, bodies))
        if wait_seconds:
            self._resize_window(results, in_flight)
        self._add(results)

    def _resize_window(self, back: list[ResultBundle], in_flight: int) -> None:
        """Double the window when three quarters or more of the bundles in flight were back
        on waking (the threads all but ran dry meanwhile), unless it would then hold
        _MOST_TASKS_IN_FLIGHT tasks; halve it, down to the first, when only the half waited
        for was."""
        if len(back) * 4 >= in_flight * 3:
            tasks = sum(len(b.results) for b in back) / len(back)  # a bundle's, about
            if tasks * self._window * 2 <= _MOST_TASKS_IN_FLIGHT:
                self._window = min(self._window * 2, self._most_window)
        elif len(back) <= self._window // 2:
            self._window = max(self._window // 2, self._least_window)

    def _add(self, bundles: list[ResultBundle]) -> None:
        # The results are here, and no copy of a bundle can come back: its lease (which
        # holds the results too) would only keep them alive.
        self.leases.forget([bundle_key(b.job_id, b.seq) for b in bundles])
        pop = self._in_flight.pop
        for b in bundles:
            pop(b.seq, None)
        bundles = [b for b in bundles if b.results]
        if not bundles:
            return
        self.summary.add_all(bundles)
        if self.on_results is not None:
            for b in bundles:
                self.on_results(b)

    def _recover_unfinished(self) -> None:
        """After a stop, the finished tasks of bundles the worker gave back are in the lease
        store, as a takeover would find them: they count too."""
        for seq, bundle in sorted(self._in_flight.items()):
            claim = self.leases.lookup(bundle_key(bundle.job_id, seq))
            if claim is not None and claim.outcome != COMPLETED and claim.results:
                self._add([ResultBundle(bundle.job_id, seq,
                                        IN_PROCESS.unpack_results(claim.results, bundle.tasks),
                                        bundle.sent_at, WORKER_ID)])

    def _take_workload_counts(self) -> None:
        w, s = self.workload, self.summary
        s.tasks_read, s.bad_lines = w.tasks + w.skipped, w.bad_lines

    def _count_unread(self) -> None:
        """After a stop, read on through the rest of the file, running nothing and naming
        no bad line, to count its tasks; stop counting after UNREAD_COUNT_SECONDS."""
        bundles, self._unread = self._unread, None
        if bundles is None:
            return
        workload = self.workload
        read, skipped = workload.tasks, workload.skipped
        workload.on_bad_line = None  # lines never read are not reported
        deadline = time.monotonic() + UNREAD_COUNT_SECONDS
        try:
            for _ in bundles:
                if time.monotonic() >= deadline:
                    self.summary.not_read_at_least = True
                    break
        except WorkloadError as exc:  # the file became unreadable: count what was read
            log.debug("counting the tasks not read stopped: %s", exc)
            self.summary.not_read_at_least = True
        finally:
            bundles.close()  # and so the file
        self.summary.not_read = workload.tasks - read
        self.summary.tasks_read += workload.skipped - skipped  # resumed: their results count

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
