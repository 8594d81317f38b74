"""Split a workload into task bundles and send them to the input queue.

The workload is streamed (memory does not grow with its length); its bundles are encoded,
grouped into SendMessageBatch calls (10 entries, 1 MiB) and sent by several senders in
parallel, with a bounded number of batches in flight. Bundle numbers follow the file, so the
same workload split twice (S3 and Lambda both deliver at least once) yields the same bundles
under the same lease keys, and the workers run each task once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from cloudkon.backends import MessageQueue, batches
from cloudkon.codec import encode_bundle
from cloudkon.limits import (
    DEFAULT_SENDERS,
    MAX_REPORTED_BAD_LINES,
    SQS_MAX_MESSAGE_BYTES,
)
from cloudkon.model import Bundle
from cloudkon.workload import BadLine, Workload

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


def split(workload: Workload, job_id: str, queue: MessageQueue, reply_to: str,
          bundle_size: int, bundle_ms: float, senders: int = DEFAULT_SENDERS,
          attempt: int = 1) -> SplitReport:
    """Send every task of ``workload`` to ``queue`` in bundles numbered from 0 in file order,
    as attempt ``attempt`` of the job, results to go to ``reply_to``; return what was read.
    Raises the first send error, after the batches already in flight have finished."""
    report = SplitReport()

    def on_bad_line(bad: BadLine) -> None:
        report.bad_line_count += 1
        if len(report.bad_lines) < MAX_REPORTED_BAD_LINES:
            report.bad_lines.append((bad.line, bad.reason))

    previous_handler = workload.on_bad_line
    workload.on_bad_line = on_bad_line
    slots = threading.BoundedSemaphore(senders * (1 + _QUEUED_PER_SENDER))
    failure: list[BaseException] = []

    def done(future: Future) -> None:
        slots.release()
        if future.exception() is not None:
            failure.append(future.exception())

    in_flight: list[Future] = []
    try:
        # Leaving the pool waits for the batches in flight, so none is lost on an error.
        with ThreadPoolExecutor(senders, thread_name_prefix="cloudkon-sender") as pool:

            def send(batch: list[str]) -> None:
                slots.acquire()
                if not failure:
                    future = pool.submit(queue.send_batch, batch)
                    future.add_done_callback(done)
                    in_flight.append(future)

            held: list[list[str]] = []
            for batch in batches(_bodies(workload, job_id, reply_to, bundle_size, bundle_ms,
                                         report, attempt)):
                held.append(batch)
                if len(held) > _TAIL_BATCHES:
                    send(held.pop(0))
                    del in_flight[:-senders * (1 + _QUEUED_PER_SENDER)]
                if failure:
                    break
            # The job's last, smallest bundles go out one batch after another, each once
            # every batch before it has landed, so that they are received last.
            for batch in held:
                wait(in_flight)
                if failure:
                    break
                send(batch)
    finally:
        workload.on_bad_line = previous_handler
    if failure:
        raise failure[0]
    log.info("job %s: sent %d tasks in %d bundles to queue %s (%d bad lines)", job_id,
             report.tasks, report.bundles, queue.name, report.bad_line_count,
             extra={"job_id": job_id})
    return report


def _bodies(workload: Workload, job_id: str, reply_to: str, bundle_size: int,
            bundle_ms: float, report: SplitReport, attempt: int = 1) -> Iterator[str]:
    """The message bodies of the workload's bundles, renumbered so that a bundle too large
    for one message travels as several, still in a deterministic order."""
    seq = 0
    for bundle in workload.bundles(job_id, bundle_size, bundle_ms, ramp=True):
        _note_lines(report, bundle.tasks)
        for part in _fitting(bundle.tasks, job_id, reply_to, attempt):
            part.seq = seq
            seq += 1
            report.tasks += len(part.tasks)
            report.bundles += 1
            part.sent_at = time.time()
            yield encode_bundle(part, reply_to)


def _fitting(tasks: list[tuple[int, str]], job_id: str, reply_to: str,
             attempt: int = 1) -> list[Bundle]:
    """The tasks as one bundle, or halved until each part fits one message."""
    bundle = Bundle(job_id, 0, tasks, attempt=attempt)
    if len(tasks) <= 1 or len(encode_bundle(bundle, reply_to)) <= SQS_MAX_MESSAGE_BYTES:
        return [bundle]
    half = len(tasks) // 2
    return (_fitting(tasks[:half], job_id, reply_to, attempt)
            + _fitting(tasks[half:], job_id, reply_to, attempt))


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
