"""The contracts of cloudkon.backends, held against every implementation: the in-memory
queue and lease store of cloudkon/backends/memory.py, and SQS and DynamoDB (on the moto server).

Memory backends run on a clock the test moves; SQS visibility runs on the server's clock,
so those tests use one-second timeouts and wait for the outcome with a deadline.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from clock import FakeClock
from conftest import wait_until

from cloudkon.backends import BUSY, CLAIMED, COMPLETED, IN_PROGRESS, JOB_ACTIVE, JOB_CANCELLED
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from cloudkon.errors import NotSetUpError


class QueueBackend:
    """A fresh queue (with a dead-letter queue, redrive after 2 receives) and how to let
    its visibility timeouts run out."""

    def __init__(self, broker, queue, dead_letter, clock: FakeClock | None) -> None:
        self.broker = broker
        self.queue = queue
        self.dead_letter = dead_letter
        self.clock = clock

    @property
    def settle_seconds(self) -> int:
        """How long a receive must wait to show that nothing comes back: past a SHORT
        visibility timeout on SQS, not at all on the fake clock."""
        return 0 if self.clock is not None else SHORT + 1

    def expire(self, seconds: float) -> None:
        """Move time past ``seconds`` for the memory queue; SQS's own time runs by itself."""
        if self.clock is not None:
            self.clock.advance(seconds + 1)

    def receive_soon(self, n: int = 10, visibility: int = 30):
        """Receive, waiting (with a deadline) for messages to become visible again."""
        return wait_until(lambda: self.queue.receive(n, 0, visibility), timeout=15,
                          what="messages visible again")


# Visibility timeouts the tests let run out: short on SQS, anything on a fake clock.
SHORT = 1
# A visibility timeout that outlasts several calls on a loaded machine.
LOADED = 4


@pytest.fixture(params=["memory", "sqs"])
def backend(request):
    if request.param == "memory":
        clock = FakeClock()
        broker = MemoryBroker(clock)
        queue = broker.create("in", dead_letter="in-dlq", max_receives=2)
        return QueueBackend(broker, queue, broker.queue("in-dlq"), clock)
    from cloudkon.backends.sqs import SqsBroker, SqsQueue

    sqs = request.getfixturevalue("sqs")
    name = f"c{uuid.uuid4().hex[:10]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    })["QueueUrl"]
    broker = SqsBroker(sqs)
    return QueueBackend(broker, SqsQueue(sqs, url, name, dlq_url), SqsQueue(sqs, dlq_url), None)


def bodies(messages) -> list[str]:
    return sorted(m.body for m in messages)


def drain(queue, visibility: int = 30) -> list:
    """Everything visible in the queue now."""
    got = []
    while batch := queue.receive(10, 0, visibility):
        got += batch
    return got


# --- queues ----------------------------------------------------------------------------------

def test_every_sent_body_is_received_once(backend):
    sent = [f"body {i}" for i in range(15)]  # more than one batch of 10
    backend.queue.send_batch(sent)
    got = drain(backend.queue)
    assert bodies(got) == sorted(sent)
    assert len({m.id for m in got}) == 15
    assert all(m.receive_count == 1 for m in got)


def test_receive_on_an_empty_queue_waits_then_returns_nothing(backend):
    assert backend.queue.receive(10, 1, 30) == []


def test_received_message_stays_invisible_until_its_visibility_runs_out(backend):
    backend.queue.send_batch(["one"])
    first = backend.queue.receive(10, 0, SHORT)
    assert bodies(first) == ["one"]
    assert backend.queue.receive(10, 0, SHORT) == []
    backend.expire(SHORT)
    again = backend.receive_soon()
    assert bodies(again) == ["one"]
    assert again[0].id == first[0].id
    assert again[0].receipt != first[0].receipt
    assert again[0].receive_count == 2


def test_deleted_message_never_comes_back(backend):
    backend.queue.send_batch(["gone"])
    [message] = backend.queue.receive(10, 0, SHORT)
    backend.queue.delete(message)
    backend.queue.delete(message)  # deleting twice is not an error
    backend.expire(SHORT)
    assert backend.queue.receive(10, backend.settle_seconds, 30) == []


def test_delete_batch_removes_every_message_for_good_across_several_calls(backend):
    sent = [f"m{i}" for i in range(25)]  # more than one DeleteMessageBatch takes
    backend.queue.send_batch(sent)
    # Held long enough that a loaded machine drains all 25 before the first come back.
    held = drain(backend.queue, LOADED)
    assert sorted(bodies(held)) == sorted(sent)
    backend.queue.delete(held[0])  # one already gone is skipped, not an error
    backend.queue.delete_batch(held)
    backend.queue.delete_batch(held[:3])  # deleting twice is not an error
    backend.queue.delete_batch([])
    backend.expire(LOADED)
    settle = 0 if backend.clock is not None else LOADED + 1
    assert backend.queue.receive(10, settle, 30) == []


def test_given_back_message_is_visible_at_once(backend):
    backend.queue.send_batch(["a", "b"])
    held = backend.queue.receive(10, 0, 600)
    assert len(held) == 2
    backend.queue.give_back(held)
    assert bodies(backend.queue.receive(10, 1, 600)) == ["a", "b"]


def test_extend_keeps_a_held_message_hidden_and_fails_once_it_is_deleted(backend):
    backend.queue.send_batch(["long"])
    [message] = backend.queue.receive(10, 0, SHORT)
    assert backend.queue.extend(message, 600)
    backend.expire(SHORT)
    # Its first timeout has passed: still hidden.
    assert backend.queue.receive(10, backend.settle_seconds, 30) == []
    backend.queue.delete(message)
    assert not backend.queue.extend(message, 600)


def test_extend_works_with_the_handle_of_the_latest_receive(backend):
    # Whether an earlier receive's handle still works is SQS's business (moto accepts it,
    # the memory queue does not); the worker never relies on it: leases fence owners.
    backend.queue.send_batch(["twice"])
    backend.queue.receive(10, 0, SHORT)
    backend.expire(SHORT)
    [second] = backend.receive_soon()
    assert backend.queue.extend(second, 600)
    backend.expire(SHORT)
    assert backend.queue.receive(10, backend.settle_seconds, 30) == []


def test_dead_letter_moves_the_message_to_the_dead_letter_queue(backend):
    backend.queue.send_batch(["poison"])
    [message] = backend.queue.receive(10, 0, 30)
    backend.queue.dead_letter(message, "not a bundle")
    assert bodies(backend.dead_letter.receive(10, 1, 30)) == ["poison"]
    backend.expire(30)
    assert backend.queue.receive(10, 1, 30) == []


def test_redrive_moves_a_message_received_too_often_to_the_dead_letter_queue(backend):
    backend.queue.send_batch(["crasher"])
    for _ in range(2):  # the redrive policy allows two receives
        [message] = backend.receive_soon(visibility=30)
        backend.queue.give_back([message])
    assert backend.queue.receive(10, 1, 30) == []
    assert bodies(backend.dead_letter.receive(10, 1, 30)) == ["crasher"]


def test_broker_finds_queues_by_name_and_refuses_unknown_ones(backend):
    assert backend.broker.queue(backend.queue.name).name == backend.queue.name
    with pytest.raises(NotSetUpError):
        backend.broker.queue(f"nope{uuid.uuid4().hex[:8]}")


# --- lease stores ----------------------------------------------------------------------------

LEASE = 30.0


@pytest.fixture(params=["memory", "dynamodb"])
def leases(request):
    """A lease store and its clock (both stores take the clock they measure leases by)."""
    clock = FakeClock(time.time())
    if request.param == "memory":
        store = MemoryLeaseStore(clock)
        store.cancel_for_test = store.cancel_job
        return store, clock
    from cloudkon.backends.dynamodb import DynamoLeaseStore
    from cloudkon.backends.resources import _ensure_table
    from submitter.manifest import SUBMITTED, DynamoManifests, Manifest

    dynamodb = request.getfixturevalue("dynamodb")
    table = f"c{uuid.uuid4().hex[:10]}-leases"
    _ensure_table(dynamodb, table)
    store = DynamoLeaseStore(dynamodb, table, clock)
    manifests = DynamoManifests(dynamodb, table)

    def cancel(job_id: str) -> None:  # as `cloudkon cancel` marks the job's record
        manifests.start(Manifest(job_id, SUBMITTED, "w.txt", time.time(), tasks=1, bundles=1))
        assert manifests.cancel(job_id) is True

    store.cancel_for_test = cancel
    return store, clock


def test_first_claim_wins_and_a_second_owner_finds_it_busy(leases):
    store, _ = leases
    won = store.claim("job#0", "a", LEASE)
    assert (won.outcome, won.owner, won.attempt, won.results) == (CLAIMED, "a", 1, None)
    lost = store.claim("job#0", "b", LEASE)
    assert (lost.outcome, lost.owner) == (BUSY, "a")
    assert lost.lease_expires == pytest.approx(won.lease_expires)


def test_a_claim_retried_by_its_owner_is_still_its_own(leases):
    store, _ = leases
    store.claim("job#0", "a", LEASE)
    assert store.claim("job#0", "a", LEASE).outcome == CLAIMED


def test_heartbeat_changes_the_record_version_so_a_watcher_cannot_take_over(leases):
    store, clock = leases
    first = store.claim("job#0", "a", LEASE)
    busy = store.claim("job#0", "b", LEASE)
    assert (busy.outcome, busy.rvn, busy.lease_seconds) == (BUSY, first.rvn, LEASE)
    assert store.heartbeat("job#0", "a", LEASE)
    clock.advance(LEASE * 10)  # no clock decides: the version the watcher saw is gone
    assert store.claim("job#0", "b", LEASE, seen=first.rvn).outcome == BUSY
    assert store.lookup("job#0").owner == "a"


def test_expired_lease_is_taken_over_with_the_results_stored_so_far(leases):
    store, _ = leases
    store.claim("job#0", "a", LEASE)
    assert store.heartbeat("job#0", "a", LEASE, b"finished-1")
    seen = store.claim("job#0", "b", LEASE)
    assert seen.outcome == BUSY and seen.rvn
    taken = store.claim("job#0", "b", LEASE, seen=seen.rvn)
    assert (taken.outcome, taken.owner, taken.attempt, taken.results) == \
        (CLAIMED, "b", 2, b"finished-1")
    assert taken.rvn != seen.rvn
    # The old owner is fenced off: nothing it writes lands any more.
    assert not store.heartbeat("job#0", "a", LEASE, b"stale")
    assert not store.complete("job#0", "a", b"stale")
    store.release("job#0", "a")
    assert store.lookup("job#0").owner == "b"
    assert store.claim("job#0", "c", LEASE).outcome == BUSY
    assert store.claim("job#0", "c", LEASE, seen=seen.rvn).outcome == BUSY  # a stale version


def test_a_claimers_clock_hours_ahead_takes_no_live_lease(leases):
    # Both stores take the writer's clock: a holder 5 minutes behind, a claimer 5 minutes
    # ahead, as two machines apart. Only record versions decide.
    store, clock = leases
    store.clock = lambda: clock() - 300
    store.claim("job#0", "a", LEASE)
    store.clock = lambda: clock() + 300
    assert store.claim("job#0", "b", LEASE).outcome == BUSY
    store.clock = lambda: clock() - 300
    assert store.heartbeat("job#0", "a", LEASE)
    store.clock = lambda: clock() + 300
    assert store.claim("job#0", "b", LEASE).outcome == BUSY
    assert store.lookup("job#0").owner == "a"


def test_completed_key_is_never_claimed_again_and_keeps_its_results(leases):
    store, clock = leases
    store.claim("job#0", "a", LEASE)
    assert store.complete("job#0", "a", b"all results")
    assert store.complete("job#0", "a", b"all results")  # a retried completion
    clock.advance(LEASE * 100)
    found = store.claim("job#0", "b", LEASE)
    assert (found.outcome, found.owner, found.results) == (COMPLETED, "a", b"all results")


def test_release_lets_anyone_claim_at_once_and_keeps_results(leases):
    store, _ = leases
    store.claim("job#0", "a", LEASE)
    store.release("job#0", "a", b"half")
    taken = store.claim("job#0", "b", LEASE)
    assert (taken.outcome, taken.results) == (CLAIMED, b"half")


def test_a_lease_of_a_worker_before_record_versions_is_taken_over_after_a_watch(dynamodb):
    # A fleet upgraded in place: an item without rvn, as an older worker claims it.
    from cloudkon.backends.dynamodb import DynamoLeaseStore
    from cloudkon.backends.resources import _ensure_table

    table = f"c{uuid.uuid4().hex[:10]}-leases"
    _ensure_table(dynamodb, table)
    store = DynamoLeaseStore(dynamodb, table)
    dynamodb.put_item(TableName=table, Item={
        "pk": {"S": "job#0"}, "status": {"S": IN_PROGRESS}, "owner": {"S": "old/1"},
        "lease_expires": {"N": "1800000000.000000"}, "attempts": {"N": "1"}})
    seen = store.claim("job#0", "new", LEASE)
    assert seen.outcome == BUSY and seen.rvn
    # Its old holder beats (a new lease_expires): the version watched is gone.
    dynamodb.update_item(TableName=table, Key={"pk": {"S": "job#0"}},
                         UpdateExpression="SET lease_expires = :l",
                         ExpressionAttributeValues={":l": {"N": "1800000020.000000"}})
    assert store.claim("job#0", "new", LEASE, seen=seen.rvn).outcome == BUSY
    seen = store.claim("job#0", "new", LEASE)
    taken = store.claim("job#0", "new", LEASE, seen=seen.rvn)
    assert (taken.outcome, taken.owner, taken.attempt) == (CLAIMED, "new", 2)
    assert not taken.rvn.startswith("lease_expires=")


def test_a_late_heartbeat_does_not_take_back_a_released_lease(leases):
    store, _ = leases
    store.claim("job#0", "a", LEASE)
    store.release("job#0", "a", b"half")
    assert not store.heartbeat("job#0", "a", LEASE)  # a call that hung, landing at last
    assert store.lookup("job#0").lease_expires == 0
    assert store.claim("job#0", "b", LEASE).outcome == CLAIMED


def test_release_by_someone_not_holding_the_key_does_nothing(leases):
    store, _ = leases
    store.claim("job#0", "a", LEASE)
    store.release("job#0", "b")
    assert store.claim("job#0", "c", LEASE).outcome == BUSY


def test_lookup_tells_the_state_of_a_key(leases):
    store, _ = leases
    assert store.lookup("job#0") is None
    store.claim("job#0", "a", LEASE)
    assert store.lookup("job#0").outcome == IN_PROGRESS
    store.complete("job#0", "a", b"r")
    record = store.lookup("job#0")
    assert (record.outcome, record.owner, record.results) == (COMPLETED, "a", b"r")


def test_keys_are_independent(leases):
    store, _ = leases
    assert store.claim("job#0", "a", LEASE).outcome == CLAIMED
    assert store.claim("job#1", "b", LEASE).outcome == CLAIMED


def test_a_completed_key_keeps_when_its_bundle_was_queued(leases):
    store, _ = leases
    store.claim("job#0", "a", LEASE)
    assert store.complete("job#0", "a", b"r", 1_800_000_000.25)
    assert store.lookup("job#0").sent_at == 1_800_000_000.25


def test_job_state_says_cancelled_once_the_job_is_cancelled_and_only_that_job(leases):
    store, _ = leases
    assert store.job_state("job") == JOB_ACTIVE  # no record at all: active
    store.claim("job#0", "a", LEASE)
    store.cancel_for_test("job")
    assert store.job_state("job") == JOB_CANCELLED
    assert store.job_state("other") == JOB_ACTIVE
    assert store.lookup("job#0").outcome == IN_PROGRESS  # a read: nothing else changed


def test_memory_take_removes_what_a_receive_would_get_and_leaves_held_messages():
    # The local client's one step for receive-and-delete (not part of the contract).
    clock = FakeClock()
    queue = MemoryBroker(clock).create("q")
    queue.send_batch(["a", "b", "c"])
    assert [m.body for m in queue.receive(1, 0, 30)] == ["a"]

    assert queue.take(10) == ["b", "c"]
    assert queue.receive(10, 0, 30) == []
    clock.advance(31)
    assert queue.take(10) == ["a"] and len(queue) == 0
