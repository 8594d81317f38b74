"""Split a workload into task bundles and send them to the input queue.

The workload is streamed (memory does not grow with its length); its bundles are encoded,
grouped into SendMessageBatch calls (10 entries, 1 MiB) and sent by several senders in
parallel, with a bounded number of batches in flight. Bundle numbers follow the file, so the
same workload split twice (S3 and Lambda both deliver at least once) yields the same bundles
under the same lease keys, and the workers run each task once.

The split can record its progress (:class:`~submitter.manifest.SplitProgress`: the bundles
sent, every one before them sent too, and the line they end at) and continue from such a
record: the workload is read again up to that line without being looked at, and bundling
goes on as the first pass would have (the same bundles under the same keys), so that a
split cut short sends again only the bundles of batches that were in flight.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from cloudkon.backends import MessageQueue, batches
from cloudkon.codec import WIRE, WireCodec, encode_bundle
from cloudkon.errors import CloudKonError
from cloudkon.limits import (
    DEFAULT_SENDERS,
    MAX_REPORTED_BAD_LINES,
    SPLIT_PROGRESS_SECONDS,
    SQS_MAX_MESSAGE_BYTES,
)
from cloudkon.model import Bundle
from cloudkon.workload import BadLine, Workload
from submitter.manifest import SplitProgress

log = logging.getLogger(__name__)

# Batches waiting for a sender, per sender: enough to keep them busy, few enough that
# memory stays flat however long the workload is.
_QUEUED_PER_SENDER = 2
# The last batches of a split (the job's smallest bundles, see Workload.bundles) are sent
# one after another once all before them have landed: on a queue that keeps roughly to
# the order of sends, they are received last.
_TAIL_BATCHES = 2
# The most runs of lines that are not tasks (blank, comment, bad) a split records, so that
# a collector can name the missing tasks; a workload with more records none.
MAX_SKIPPED_RANGES = 1000


@dataclass
class SplitReport:
    """What a split read and sent."""

    tasks: int = 0
    bundles: int = 0
    bad_line_count: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first few
    last_line: int = 0  # the last line that is a task
    # Runs [first, last] of lines before last_line that are not tasks; None if too many.
    skipped: list[list[int]] | None = field(default_factory=list)
    groups: int = 0  # bundles as the workload made them (message bundles may be halves)
    line: int = 0  # the last line of the last bundle read
    paused: bool = False  # stopped when asked to (time running out): to be continued
    progress: SplitProgress | None = None  # the last progress recorded


def split(workload: Workload, job_id: str, queue: MessageQueue, reply_to: str,
          bundle_size: int, bundle_ms: float, senders: int = DEFAULT_SENDERS,
          attempt: int = 1, codec: WireCodec = WIRE, resume: SplitProgress | None = None,
          on_progress: Callable[[SplitProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> SplitReport:
    """Send every task of ``workload`` to ``queue`` in bundles numbered from 0 in file order,
    as attempt ``attempt`` of the job, results to go to ``reply_to``, encoded (and signed,
    if it signs) by ``codec``; return what was read. Raises the first send error, after the
    batches already in flight have finished.

    ``resume``: continue after the bundles a progress record says were sent. With
    ``on_progress``, the progress is handed to it every SPLIT_PROGRESS_SECONDS and when the
    split ends, stops or fails: every bundle it counts was sent (those of batches still in
    flight are not counted). ``should_stop`` is asked before each batch: once True, no more
    is sent and the report says ``paused``."""
    report = _resumed(resume)

    # Bad lines are counted once the bundles before them are (the workload reads a few
    # bundles ahead, see Workload.bundles), so that a progress record counts only those
    # up to its line, and a split continued from it counts none twice.
    ahead: list[BadLine] = []

    def on_bad_line(bad: BadLine) -> None:
        ahead.append(bad)

    def settle_bad_lines(upto: float) -> None:
        for bad in ahead:
            if bad.line <= upto:
                report.bad_line_count += 1
                if len(report.bad_lines) < MAX_REPORTED_BAD_LINES:
                    report.bad_lines.append((bad.line, bad.reason))
        ahead[:] = [bad for bad in ahead if bad.line > upto]

    previous_handler = workload.on_bad_line
    workload.on_bad_line = on_bad_line
    slots = threading.BoundedSemaphore(senders * (1 + _QUEUED_PER_SENDER))
    failure: list[BaseException] = []
    sent = _Sent(report, bundle_size, bundle_ms, resume)

    def done(future: Future, first: int, end: int) -> None:
        slots.release()
        if future.exception() is not None:
            failure.append(future.exception())
        else:
            sent.done(first, end)

    def record(final: bool = False) -> None:
        if on_progress is not None:
            progress = sent.progress()
            if final or progress != report.progress:
                on_progress(progress)
            report.progress = progress

    next_record = time.monotonic() + SPLIT_PROGRESS_SECONDS
    in_flight: list[Future] = []
    try:
        # Leaving the pool waits for the batches in flight, so none is lost on an error.
        with ThreadPoolExecutor(senders, thread_name_prefix="cloudkon-sender") as pool:
            first = report.bundles  # the number of the next batch's first bundle

            def send(batch: list[str]) -> None:
                nonlocal first
                slots.acquire()
                if failure:
                    return
                end = first + len(batch)
                future = pool.submit(queue.send_batch, batch)
                future.add_done_callback(lambda f, a=first, b=end: done(f, a, b))
                in_flight.append(future)
                first = end

            held: list[list[str]] = []
            for batch in batches(_bodies(workload, job_id, reply_to, bundle_size, bundle_ms,
                                         report, attempt, codec, sent, settle_bad_lines)):
                if should_stop is not None and should_stop():
                    report.paused = True
                    break
                held.append(batch)
                if len(held) > _TAIL_BATCHES:
                    send(held.pop(0))
                    del in_flight[:-senders * (1 + _QUEUED_PER_SENDER)]
                if failure:
                    break
                if on_progress is not None and time.monotonic() >= next_record:
                    record()
                    next_record = time.monotonic() + SPLIT_PROGRESS_SECONDS
            # The job's last, smallest bundles go out one batch after another, each once
            # every batch before it has landed, so that they are received last.
            for batch in ([] if report.paused else held):
                wait(in_flight)
                if failure:
                    break
                send(batch)
    finally:
        workload.on_bad_line = previous_handler
        if on_progress is not None and (failure or report.paused or sys.exc_info()[0]):
            try:
                record(final=True)
            except CloudKonError as exc:  # the split's own error is the one to raise
                log.error("job %s: its split's progress could not be recorded: %s", job_id,
                          exc, extra={"job_id": job_id})
    if failure:
        raise failure[0]
    if report.paused:
        log.warning("job %s: split stopped as asked after %d bundles sent, to line %d; it"
                    " continues from there", job_id, report.progress.bundles
                    if report.progress else report.bundles,
                    report.progress.line if report.progress else report.line,
                    extra={"job_id": job_id})
        return report
    log.info("job %s: sent %d tasks in %d bundles to queue %s (%d bad lines)", job_id,
             report.tasks, report.bundles, queue.name, report.bad_line_count,
             extra={"job_id": job_id})
    return report


def _resumed(resume: SplitProgress | None) -> SplitReport:
    """A report that starts where ``resume`` says the split got to."""
    if resume is None:
        return SplitReport()
    return SplitReport(resume.tasks, resume.bundles, resume.bad_line_count,
                       [tuple(b) for b in resume.bad_lines], resume.last_line,
                       None if resume.skipped is None else [list(r) for r in resume.skipped],
                       resume.groups, resume.line)


class _Sent:
    """Which bundles are known sent: the progress a split may record. The bodies generator
    notes a checkpoint after each workload bundle (how far the report had got); senders
    report the batches sent, in any order; the progress is the last checkpoint whose
    bundles, and all before, are sent."""

    def __init__(self, report: SplitReport, bundle_size: int, bundle_ms: float,
                 resume: SplitProgress | None) -> None:
        self.report = report
        self.lock = threading.Lock()
        self.checkpoints: deque[tuple] = deque()
        self.batches: dict[int, int] = {}  # first bundle -> end, of batches sent
        self.through = report.bundles  # every bundle before this one is sent
        base = resume or SplitProgress()
        self.last = replace(base, bundles=report.bundles, groups=report.groups,
                            line=report.line, bundle_size=base.bundle_size or bundle_size,
                            bundle_ms=base.bundle_ms or bundle_ms)

    def checkpoint(self) -> None:
        r = self.report
        self.checkpoints.append((r.bundles, r.groups, r.line, r.tasks, r.bad_line_count,
                                 len(r.bad_lines), r.last_line,
                                 None if r.skipped is None else len(r.skipped)))

    def done(self, first: int, end: int) -> None:
        with self.lock:
            self.batches[first] = end
            while self.through in self.batches:
                self.through = self.batches.pop(self.through)

    def progress(self) -> SplitProgress:
        """The progress as sent so far (main thread: the checkpoints are its own)."""
        with self.lock:
            through = self.through
        point = None
        while self.checkpoints and self.checkpoints[0][0] <= through:
            point = self.checkpoints.popleft()
        if point is not None:
            r = self.report
            bundles, groups, line, tasks, bad, n_bad, last_line, n_skipped = point
            skipped = (None if n_skipped is None or r.skipped is None
                       else [list(x) for x in r.skipped[:n_skipped]])
            self.last = replace(self.last, bundles=bundles, groups=groups, line=line,
                                tasks=tasks, bad_line_count=bad,
                                bad_lines=[list(b) for b in r.bad_lines[:n_bad]],
                                last_line=last_line, skipped=skipped)
        return self.last


def _bodies(workload: Workload, job_id: str, reply_to: str, bundle_size: int,
            bundle_ms: float, report: SplitReport, attempt: int = 1,
            codec: WireCodec = WIRE, sent: _Sent | None = None,
            settle_bad_lines: Callable[[float], None] | None = None) -> Iterator[str]:
    """The message bodies of the workload's bundles, renumbered so that a bundle too large
    for one message travels as several, still in a deterministic order; a report resumed
    from a progress record continues after its line, from its bundle."""
    seq = report.bundles
    for bundle in workload.bundles(job_id, bundle_size, bundle_ms, ramp=True,
                                   after_line=report.line, first_seq=report.groups):
        _note_lines(report, bundle.tasks)
        for part in _fitting(bundle.tasks, job_id, reply_to, attempt, codec.bundle_overhead):
            part.seq = seq
            seq += 1
            report.tasks += len(part.tasks)
            report.bundles += 1
            part.sent_at = time.time()
            yield codec.encode_bundle(part, reply_to)
        report.groups += 1
        report.line = bundle.tasks[-1][0]
        if settle_bad_lines is not None:
            settle_bad_lines(report.line)
        # A split continues only after a bundle the workload makes the same way whatever
        # line it starts from: not one of the job's small end, which depends on the end
        # of the file (a split stopped there sends the whole end again).
        if sent is not None and not workload.ending:
            sent.checkpoint()
    if settle_bad_lines is not None:
        settle_bad_lines(float("inf"))


def _fitting(tasks: list[tuple[int, str]], job_id: str, reply_to: str,
             attempt: int = 1, overhead: int = 0) -> list[Bundle]:
    """The tasks as one bundle, or halved until each part, with ``overhead`` characters
    more (a signature), fits one message."""
    bundle = Bundle(job_id, 0, tasks, attempt=attempt)
    if (len(tasks) <= 1
            or len(encode_bundle(bundle, reply_to)) + overhead <= SQS_MAX_MESSAGE_BYTES):
        return [bundle]
    half = len(tasks) // 2
    return (_fitting(tasks[:half], job_id, reply_to, attempt, overhead)
            + _fitting(tasks[half:], job_id, reply_to, attempt, overhead))


def _note_lines(report: SplitReport, tasks: list[tuple[int, str]]) -> None:
    """Record the gaps between task lines: the lines that are not tasks."""
    last = report.last_line
    for line, _ in tasks:
        if line > last + 1 and report.skipped is not None:
            report.skipped.append([last + 1, line - 1])
            if len(report.skipped) > MAX_SKIPPED_RANGES:
                report.skipped = None
        last = line
    report.last_line = last
