"""In-memory message queues and lease store, with the semantics of SQS and DynamoDB.

They implement :mod:`cloudkon.backends` inside one process: thread-safe, with visibility
timeouts, receive counts, redrive to a dead-letter queue, leases and owners. Time comes
from a clock function, so a test can move it forward instead of sleeping; waiting in
``receive`` is real time, in short slices, so a clock moved by another thread is seen.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloudkon.backends import (
    BUSY,
    CLAIMED,
    COMPLETED,
    IN_PROGRESS,
    JOB_ACTIVE,
    JOB_CANCELLED,
    Claim,
    Message,
    WorkerRecord,
)
from cloudkon.errors import CloudKonError, NotSetUpError, SpillError
from cloudkon.limits import LEASE_RESULTS_MAX_BYTES
from cloudkon.spill import check_bucket, check_pointer, spill_key, verified

_WAIT_SLICE = 0.02  # seconds a waiting receive sleeps between looks


@dataclass(slots=True)
class _Stored:
    id: str
    body: str
    visible_at: float = 0.0
    receives: int = 0
    receipt: str = ""


class MemoryQueue:
    """A queue in memory; ``clock`` gives the time visibility timeouts are measured in."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic,
                 dead_letter: MemoryQueue | None = None, max_receives: int | None = None) -> None:
        self.name = name
        self.clock = clock
        self.dead_letter_queue = dead_letter
        self.max_receives = max_receives  # redrive to dead_letter after this many receives
        self._messages: dict[str, _Stored] = {}  # in sending order
        self._mutex = threading.Lock()  # entered directly: no Python-level wrapper
        self._lock = threading.Condition(self._mutex)
        self._ids = itertools.count(1)
        self._receipts = itertools.count(1)  # each receive's handle is new
        self._closed = False
        self._fresh = 0  # messages sent and not received yet
        self._receivers = 0  # receives waiting
        self._wanted: list[int] = []  # what each wait_for() waits for

    def receive(self, max_messages: int, wait_seconds: float,
                visibility_seconds: int) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        while True:
            with self._mutex:
                got = self._take(max_messages, visibility_seconds)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0 or self._closed:
                    return got
                self._receivers += 1
                try:
                    self._lock.wait(min(remaining, _WAIT_SLICE))
                finally:
                    self._receivers -= 1

    def _take(self, max_messages: int, visibility_seconds: int) -> list[Message]:
        now = self.clock()
        got = []
        for stored in self._due(max_messages, now):
            stored.receives += 1
            stored.visible_at = now + visibility_seconds
            stored.receipt = f"{stored.id}/{next(self._receipts)}"
            got.append(Message(stored.id, stored.body, stored.receipt, stored.receives))
        return got

    def _due(self, max_messages: int, now: float) -> list[_Stored]:
        """Under the lock: up to ``max_messages`` messages visible at ``now``, in sending
        order, now counted as received (no longer fresh); those already received
        ``max_receives`` times go to the dead-letter queue instead."""
        due = []
        redriven = []
        for stored in self._messages.values():
            if len(due) >= max_messages:
                break
            if stored.visible_at > now:
                continue
            if self.max_receives is not None and stored.receives >= self.max_receives \
                    and self.dead_letter_queue is not None:
                redriven.append(stored)
                continue
            if not stored.receives:
                self._fresh -= 1
            due.append(stored)
        for stored in redriven:
            del self._messages[stored.id]
            self.dead_letter_queue.send_batch([stored.body])
        return due

    def delete(self, message: Message) -> None:
        with self._mutex:
            stored = self._messages.get(message.id)
            if stored is not None and stored.receipt == message.receipt:
                del self._messages[message.id]

    def delete_batch(self, messages: list[Message]) -> None:
        with self._mutex:
            for message in messages:
                stored = self._messages.get(message.id)
                if stored is not None and stored.receipt == message.receipt:
                    del self._messages[message.id]

    def extend(self, message: Message, seconds: int) -> bool:
        with self._mutex:
            stored = self._messages.get(message.id)
            if stored is None or stored.receipt != message.receipt:
                return False
            stored.visible_at = self.clock() + seconds
            return True

    def give_back(self, messages: list[Message]) -> None:
        with self._mutex:
            now = self.clock()
            for message in messages:
                stored = self._messages.get(message.id)
                if stored is not None and stored.receipt == message.receipt:
                    stored.visible_at = now
            self._lock.notify_all()

    def send_batch(self, bodies: list[str]) -> None:
        with self._mutex:
            for body in bodies:
                mid = f"{self.name}-{next(self._ids)}"
                self._messages[mid] = _Stored(mid, body)
            self._fresh += len(bodies)
            if self._receivers or (self._wanted and self._fresh >= min(self._wanted)):
                self._lock.notify_all()

    def dead_letter(self, message: Message, reason: str) -> None:
        if self.dead_letter_queue is None:
            raise NotSetUpError(f"queue {self.name} has no dead-letter queue")
        self.dead_letter_queue.send_batch([message.body])
        self.delete(message)

    # For the local flavour and tests: not part of the queue interface.
    def take(self, max_messages: int) -> list:
        """Remove up to ``max_messages`` visible messages and return their bodies, as a
        receive and a delete of each would, in one step: for the queue's only reader."""
        with self._mutex:
            due = self._due(max_messages, self.clock())
            messages = self._messages
            for stored in due:
                del messages[stored.id]
            return [stored.body for stored in due]

    def wait_for(self, count: int, seconds: float) -> None:
        """Wait until at least ``count`` messages sent have not been received yet, or
        ``seconds`` pass, or the queue is closed: a reader that takes its messages in
        batches is woken once a batch, not once a message."""
        deadline = time.monotonic() + seconds
        with self._mutex:
            self._wanted.append(count)
            try:
                while self._fresh < count and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._lock.wait(remaining)
            finally:
                self._wanted.remove(count)

    def close(self) -> None:
        """Wake every waiting receive and let later ones return at once: the process that
        owns the queue is done with it."""
        with self._mutex:
            self._closed = True
            self._lock.notify_all()

    def __len__(self) -> int:
        """Messages not yet deleted, visible or not."""
        with self._mutex:
            return len(self._messages)

    def visible(self) -> int:
        """Messages a receive would get now."""
        with self._mutex:
            now = self.clock()
            return sum(1 for s in self._messages.values() if s.visible_at <= now)


class MemoryBroker:
    """Named in-memory queues sharing one clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._queues: dict[str, MemoryQueue] = {}
        self._lock = threading.Lock()

    def create(self, name: str, dead_letter: str | None = None,
               max_receives: int | None = None) -> MemoryQueue:
        """Make the queue ``name`` (and its dead-letter queue) unless it exists; return it."""
        with self._lock:
            if name not in self._queues:
                dlq = None
                if dead_letter is not None:
                    dlq = self._queues.setdefault(dead_letter, MemoryQueue(dead_letter, self.clock))
                self._queues[name] = MemoryQueue(name, self.clock, dlq, max_receives)
            return self._queues[name]

    def queue(self, name: str) -> MemoryQueue:
        with self._lock:
            try:
                return self._queues[name]
            except KeyError:
                raise NotSetUpError(f"queue {name} does not exist") from None


@dataclass(slots=True)
class _Lease:
    status: str
    owner: str
    lease_expires: float  # by the writer's clock, for people to read; 0: released
    results: bytes | None
    attempt: int
    sent_at: float = 0.0
    rvn: str = ""
    lease_seconds: float = 0.0

    def claim(self, outcome: str) -> Claim:
        return Claim(outcome, self.owner, self.lease_expires, self.results, self.attempt,
                     self.sent_at, self.rvn, self.lease_seconds)


class MemoryLeaseStore:
    """A lease store in memory; ``clock`` gives seconds since the epoch, only for the
    ``lease_expires`` people read: takeovers go by record versions (LeaseStore.claim)."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 max_results_bytes: int = LEASE_RESULTS_MAX_BYTES) -> None:
        self.clock = clock
        self.max_results_bytes = max_results_bytes
        self._leases: dict[str, _Lease] = {}
        self._cancelled: set[str] = set()  # job ids
        self._lock = threading.Lock()
        self._rvns = map(str, itertools.count(1))  # record versions: each write's is new

    def claim(self, key: str, owner: str, lease_seconds: float, seen: str = "") -> Claim:
        with self._lock:
            now = self.clock()
            lease = self._leases.get(key)
            if lease is not None and lease.status == COMPLETED:
                return lease.claim(COMPLETED)
            if lease is not None and lease.owner == owner:
                return lease.claim(CLAIMED)  # a retried claim: still the claimer's
            if lease is None or lease.lease_expires == 0.0 or (seen and lease.rvn == seen):
                results = lease.results if lease is not None else None
                attempt = lease.attempt + 1 if lease is not None else 1
                lease = self._leases[key] = _Lease(IN_PROGRESS, owner, now + lease_seconds,
                                                   results, attempt, 0.0, next(self._rvns),
                                                   lease_seconds)
                return lease.claim(CLAIMED)
            return lease.claim(BUSY)

    def heartbeat(self, key: str, owner: str, lease_seconds: float,
                  results: bytes | None = None) -> bool:
        with self._lock:
            lease = self._held(key, owner)
            if lease is None or lease.lease_expires == 0.0:  # released: a late beat
                return False
            lease.lease_expires = self.clock() + lease_seconds
            lease.lease_seconds = lease_seconds
            lease.rvn = next(self._rvns)
            if results is not None:
                lease.results = self._checked(results)
            return True

    def complete(self, key: str, owner: str, results: bytes, sent_at: float = 0.0) -> bool:
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.owner != owner:
                return False
            lease.status = COMPLETED
            lease.results = self._checked(results)
            lease.sent_at = sent_at
            return True

    def release(self, key: str, owner: str, results: bytes | None = None) -> None:
        with self._lock:
            lease = self._held(key, owner)
            if lease is not None:
                lease.lease_expires = 0.0
                lease.rvn = next(self._rvns)
                if results is not None:
                    lease.results = self._checked(results)

    def lookup(self, key: str) -> Claim | None:
        with self._lock:
            lease = self._leases.get(key)
            if lease is None:
                return None
            return lease.claim(lease.status)

    def lookup_many(self, keys: list[str]) -> dict[str, Claim]:
        """The records of those ``keys`` that exist (as the DynamoDB store's)."""
        return {k: c for k in keys if (c := self.lookup(k)) is not None}

    def job_state(self, job_id: str) -> str:
        with self._lock:
            return JOB_CANCELLED if job_id in self._cancelled else JOB_ACTIVE

    # For the local flavour and tests: not part of the lease-store interface.
    def cancel_job(self, job_id: str) -> None:
        """Mark the job cancelled, as `cloudkon cancel` marks its record in DynamoDB."""
        with self._lock:
            self._cancelled.add(job_id)

    def forget(self, keys: list[str]) -> None:
        """Drop the keys' records: their bundles' results have reached their one reader and
        no copy of the bundles can come back (in-process queues only)."""
        with self._lock:
            pop = self._leases.pop
            for key in keys:
                pop(key, None)

    def _held(self, key: str, owner: str) -> _Lease | None:
        lease = self._leases.get(key)
        if lease is None or lease.owner != owner or lease.status != IN_PROGRESS:
            return None
        return lease

    def _checked(self, results: bytes) -> bytes:
        # Packed results are checked against the size an item holds; the local flavour
        # stores results unserialised (codec.InProcessCodec), which have no size limit.
        if isinstance(results, bytes) and len(results) > self.max_results_bytes:
            raise CloudKonError(f"results of {len(results)} bytes; the store keeps"
                                f" {self.max_results_bytes}")
        return results


class MemoryWorkerRegistry:
    """Worker records in memory, for one process (the contract of WorkerRegistry)."""

    def __init__(self) -> None:
        self._records: dict[str, WorkerRecord] = {}
        self._lock = threading.Lock()

    def beat(self, record: WorkerRecord) -> None:
        with self._lock:
            self._records[record.worker_id] = record

    def remove(self, worker_id: str) -> None:
        with self._lock:
            self._records.pop(worker_id, None)

    def workers(self) -> list[WorkerRecord]:
        with self._lock:
            return sorted(self._records.values())

    def record(self, worker_id: str) -> WorkerRecord | None:
        with self._lock:
            return self._records.get(worker_id)

class MemorySpillStore:
    """Spilled payloads in memory, for one process (the contract of cloudkon.spill.SpillStore):
    what a bucket would hold, by key."""

    def __init__(self, bucket: str = "memory") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, job_id: str, what: str, data: bytes) -> dict:
        key, digest = spill_key(job_id, what, data)
        with self._lock:
            self.objects[key] = bytes(data)
        return {"bucket": self.bucket, "key": key, "size": len(data), "sha256": digest}

    def get(self, pointer: dict) -> bytes:
        pointer = check_bucket(check_pointer(pointer), self.bucket)
        with self._lock:
            data = self.objects.get(pointer["key"])
        if data is None:
            raise SpillError(f"spilled results s3://{self.bucket}/{pointer['key']} are gone")
        return verified(pointer, data)

    def delete(self, pointer: dict) -> None:
        with self._lock:
            self.objects.pop(check_bucket(check_pointer(pointer), self.bucket)["key"], None)
