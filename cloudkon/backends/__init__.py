"""The two narrow interfaces the worker loop runs against: message queues and a lease store.

In-memory implementations live in ``memory.py`` beside this file, SQS and DynamoDB ones in
``sqs.py`` and ``dynamodb.py``; ``tests/test_broker_contract.py`` holds every
implementation to the contracts stated here, one sentence per method. A backend raises
:class:`~cloudkon.errors.CloudKonError` subclasses only, its own errors translated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from cloudkon.limits import SQS_MAX_BATCH, SQS_MAX_BATCH_BYTES


class Message(NamedTuple):
    """A message as received: its body and the handle that acknowledges it."""

    id: str
    body: str
    receipt: str  # the handle of this receive; a later receive of the same message gets another
    receive_count: int  # 1 on the first delivery


class MessageQueue(Protocol):
    """One queue with at-least-once delivery and visibility timeouts (SQS semantics)."""

    name: str

    def receive(self, max_messages: int, wait_seconds: float,
                visibility_seconds: int) -> list[Message]:
        """Up to ``max_messages`` messages, each then invisible to other receivers for
        ``visibility_seconds``; waits up to ``wait_seconds`` for the first, else returns []."""

    def delete(self, message: Message) -> None:
        """Remove a received message for good; deleting one already gone is not an error."""

    def delete_batch(self, messages: list[Message]) -> None:
        """Remove received messages for good, in as few calls as the limits allow (SQS: ten
        per DeleteMessageBatch); ones already gone are skipped, not an error."""

    def extend(self, message: Message, seconds: int) -> bool:
        """Keep a received message invisible for ``seconds`` from now; False if it is no
        longer held (deleted; an earlier receive's handle may or may not still work). It
        gives up (raises) within a share of ``seconds`` (limits.EXTEND_BUDGET_SHARE)."""

    def give_back(self, messages: list[Message]) -> None:
        """Make received messages visible again at once; ones no longer held are skipped."""

    def send_batch(self, bodies: list[str]) -> None:
        """Send every body as a message, in as few calls as the limits allow, retrying only
        the entries that failed; raises if some could not be sent."""

    def dead_letter(self, message: Message, reason: str) -> None:
        """Move a received message to this queue's dead-letter queue, then delete it here."""


def batches(bodies: Iterable[str], entries: int = SQS_MAX_BATCH) -> Iterator[list[str]]:
    """Bodies grouped as one batch send call takes them: at most ``entries`` entries and
    SQS_MAX_BATCH_BYTES of UTF-8 in all, in order."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        n = len(body) if body.isascii() else len(body.encode("utf-8"))
        if batch and (len(batch) == entries or size + n > SQS_MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += n
    if batch:
        yield batch


class Broker(Protocol):
    """Finds queues by name, the way a task bundle names where its results go."""

    def queue(self, name: str) -> MessageQueue:
        """The queue called ``name`` (for SQS also its URL); NotSetUpError if it does not exist."""


# Lease states, as stored.
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"

# What a claim found, besides CLAIMED: the key is COMPLETED, or held by a live lease (BUSY).
CLAIMED = "CLAIMED"
BUSY = "BUSY"


# What a job's record says about it, as the worker asks (LeaseStore.job_state).
JOB_ACTIVE = "ACTIVE"
JOB_CANCELLED = "CANCELLED"


class Claim(NamedTuple):
    """The outcome of a claim, and the key's record as the claim left or found it."""

    outcome: str  # CLAIMED, COMPLETED or BUSY
    owner: str  # who holds (or completed) the key: the claimer itself when CLAIMED
    lease_expires: float  # seconds since the epoch
    results: bytes | None  # stored results: all when COMPLETED, else those finished so far
    attempt: int  # how many claims the key has had, this one included when CLAIMED
    sent_at: float = 0.0  # when the completed bundle was queued (its sent_at); 0: unknown
    rvn: str = ""  # the record version: new at every claim, heartbeat and release
    lease_seconds: float = 0.0  # how long the holder's lease lasts from its last write


class LeaseStore(Protocol):
    """Claims on keys (one per bundle) with expiring leases, fenced by owner, plus the
    bundle's results: what makes at-least-once delivery run each task effectively once."""

    max_results_bytes: int  # the largest results blob the store keeps

    def claim(self, key: str, owner: str, lease_seconds: float, seen: str = "") -> Claim:
        """Take the key for ``owner`` for ``lease_seconds`` in one conditional write if it is
        new, released, or IN_PROGRESS with record version ``seen`` still (a takeover: the
        caller watched that version unchanged for a lease's duration by its own clock),
        keeping stored results; else say who has it (BUSY, with its record version). No
        clock is compared across machines."""

    def heartbeat(self, key: str, owner: str, lease_seconds: float,
                  results: bytes | None = None) -> bool:
        """Extend ``owner``'s lease to ``lease_seconds`` from now (a new record version),
        storing ``results`` if given; False if ``owner`` no longer holds the key. It gives up
        (raises) within a share of ``lease_seconds`` (limits.EXTEND_BUDGET_SHARE)."""

    def complete(self, key: str, owner: str, results: bytes, sent_at: float = 0.0) -> bool:
        """Mark the key COMPLETED with its results, and the bundle's ``sent_at`` (so that
        results read back keep their latency), if ``owner`` holds it (again: idempotent);
        False if someone else does."""

    def release(self, key: str, owner: str, results: bytes | None = None) -> None:
        """End ``owner``'s lease now, so that anyone may claim the key at once, storing
        ``results`` if given; does nothing if ``owner`` no longer holds it."""

    def lookup(self, key: str) -> Claim | None:
        """The key's record as it stands (outcome IN_PROGRESS or COMPLETED), or None."""

    def job_state(self, job_id: str) -> str:
        """JOB_CANCELLED once job ``job_id`` has been cancelled (`cloudkon cancel`), else
        JOB_ACTIVE, also for a job the store holds no record of; a read, never a write."""


class WorkerRecord(NamedTuple):
    """What a worker says about itself at each beat (docs/design.md, the worker registry)."""

    worker_id: str
    instance_id: str  # the EC2 instance it runs on, "" if it was not told
    threads: int  # bundle threads
    busy: int  # bundle threads running a bundle at the beat
    tasks_done: int  # tasks run since it started
    version: str  # cloudkon's version
    started: float  # seconds since the epoch
    last_beat: float  # seconds since the epoch
    stale_at: float  # a record not renewed by then belongs to a worker that is gone or stuck

    def stale(self, now: float) -> bool:
        return now >= self.stale_at


class WorkerRegistry(Protocol):
    """The live workers of a deployment, as they report themselves: each renews its own
    record every heartbeat interval and removes it when it exits."""

    def beat(self, record: WorkerRecord) -> None:
        """Store ``record`` as its worker's record, replacing the one it had."""

    def remove(self, worker_id: str) -> None:
        """Forget the worker's record; removing one that is absent is not an error."""

    def workers(self) -> list[WorkerRecord]:
        """Every record stored, stale ones included, ordered by worker id."""

    def record(self, worker_id: str) -> WorkerRecord | None:
        """The worker's record, stale or not; None if it has none (removed, or swept)."""
