"""Deleting the input messages of finished bundles in batches (DeleteMessageBatch).

A bundle thread hands its message over once the bundle's results are COMPLETED and sent;
a short-lived thread deletes what is pending as soon as a batch is full (SQS_MAX_BATCH) or
the first pending message has waited ``delay`` seconds, whichever comes first, and
everything pending when the worker stops. With ``delay`` 0 each message is deleted at once
by the thread that hands it over (``cloudkon run``: a memory queue's delete costs nothing).

A worker that dies with deletes pending leaves those messages to come back after their
visibility timeout: each bundle is then found COMPLETED and replayed (its stored results
sent again, which a collector drops as duplicates), as for a worker that dies between
sending results and a delete of its own (docs/design.md, section 5).
"""

from __future__ import annotations

import logging
import threading
import time

from cloudkon.backends import Message, MessageQueue
from cloudkon.errors import CloudKonError
from cloudkon.limits import SQS_MAX_BATCH

log = logging.getLogger(__name__)


class DeleteBatcher:
    """Deletes received messages of ``queue``, ``SQS_MAX_BATCH`` per call, each within about
    ``delay`` seconds of :meth:`add`; :meth:`close` deletes what is pending."""

    def __init__(self, queue: MessageQueue, delay: float) -> None:
        self.queue = queue
        self.delay = delay
        self._pending: list[Message] = []
        self._since = 0.0  # time.monotonic() when the oldest pending message was added
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, message: Message) -> None:
        """Delete ``message`` soon (at once when batching is off or the batcher is closed)."""
        if self.delay <= 0:
            self.queue.delete(message)
            return
        with self._cond:
            batching = not self._closed
            if batching:
                if not self._pending:
                    self._since = time.monotonic()
                self._pending.append(message)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True,
                                                    name="cloudkon-deletes")
                    self._thread.start()
                self._cond.notify()
        if not batching:
            self.queue.delete(message)

    def close(self, timeout: float) -> None:
        """Delete everything pending now and stop; waits up to ``timeout`` seconds."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return  # closed, nothing left
                while len(self._pending) < SQS_MAX_BATCH and not self._closed:
                    remaining = self._since + self.delay - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._pending[:SQS_MAX_BATCH]
                del self._pending[:SQS_MAX_BATCH]
                self._since = time.monotonic()
            self._delete(batch)

    def _delete(self, batch: list[Message]) -> None:
        try:
            self.queue.delete_batch(batch)
        except CloudKonError as exc:
            log.error("could not delete messages %s of finished bundles (%s): they come back"
                      " after their visibility timeout and are replayed, not run",
                      ", ".join(m.id for m in batch), exc)
