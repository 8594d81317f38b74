"""The heartbeat and the lease protocol under faults, fast, on the in-memory backends:
a lease store whose extend call hangs longer than a lease, a slow store under 1,024
running bundles, and lease takeover by record version between clocks 5 minutes apart
(docs/design.md, section 5)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from conftest import wait_until
from test_worker_daemon import VISIBILITY, Harness, appending, ids_of

from cloudkon.backends import IN_PROGRESS
from cloudkon.backends.memory import MemoryLeaseStore
from cloudkon.codec import encode_bundle
from cloudkon.model import Bundle


class SlowLeaseStore(MemoryLeaseStore):
    """A memory lease store whose heartbeats take ``delay`` seconds, and hang (until
    ``unhang`` is set, far longer than any lease here) for the first beat of each key in
    ``hang``; it counts the beats that landed, per key."""

    def __init__(self, clock, delay: float = 0.0, hang: set[str] = frozenset()) -> None:
        super().__init__(clock)
        self.delay = delay
        self.hang = set(hang)
        self.unhang = threading.Event()
        self.beats: Counter[str] = Counter()
        self._beats_lock = threading.Lock()

    def heartbeat(self, key, owner, lease_seconds, results=None):
        with self._beats_lock:
            hang = key in self.hang
            self.hang.discard(key)
        if hang:
            self.unhang.wait(60)
        elif self.delay:
            time.sleep(self.delay)  # the store's own latency, not the test waiting
        kept = super().heartbeat(key, owner, lease_seconds, results)
        if kept:
            with self._beats_lock:
                self.beats[key] += 1
        return kept


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    if isinstance(h.leases, SlowLeaseStore):
        h.leases.unhang.set()
    h.close()


def gated(tmp_path, line: int) -> tuple[int, str]:
    """A task that writes s<line> to `runs` as it starts, waits for the file `gate`, then
    writes e<line>: a copy ended before the gate leaves no e<line>."""
    gate = tmp_path / "gate"
    return line, (f"echo s{line} >> {tmp_path / 'runs'}; while [ ! -e {gate} ]; do"
                  f" /bin/sleep 0.05; done; echo e{line} >> {tmp_path / 'runs'}")


def hang_first_extend(harness: Harness, job_id: str, unhang: threading.Event) -> None:
    """Make the first extend (ChangeMessageVisibility) of the message of job ``job_id``
    hang until ``unhang`` is set."""
    extend, hung = harness.inbox.extend, []

    def hanging(message, seconds):
        if f'"{job_id}"' in str(message.body) and not hung:
            hung.append(message)
            unhang.wait(60)
        return extend(message, seconds)

    harness.inbox.extend = hanging


@pytest.mark.parametrize("hanging", ["lease store", "queue"])
def test_a_hung_heartbeat_ends_its_bundle_and_gives_the_lease_up_while_others_beat(
        harness, hanging):
    tmp = harness.tmp_path
    harness.leases = SlowLeaseStore(harness.clock,
                                    hang={"hung#0"} if hanging == "lease store" else set())
    if hanging == "queue":
        hang_first_extend(harness, "hung", harness.leases.unhang)
    bundles = [Bundle("hung", 0, [gated(tmp, 1)]), Bundle("ok", 0, [gated(tmp, 2)]),
               Bundle("ok", 1, [gated(tmp, 3)])]
    for b in bundles:
        harness.send(b)
    # Visibility 3 s: a lease of 2.7 s, a beat every second.
    worker = harness.start(threads=3, visibility=3)
    wait_until(lambda: sorted(harness.runs()) == ["s1", "s2", "s3"], what="tasks started")
    # Its first beat hangs: within the lease, the worker ends that bundle's task and gives
    # its lease up by itself; the hung call is still in flight.
    wait_until(lambda: worker.counts["expired"] == 1, timeout=10, what="the lease given up")
    assert not harness.leases.unhang.is_set()
    # The others kept beating meanwhile, each more than once, and are still running.
    wait_until(lambda: min(harness.leases.beats["ok#0"], harness.leases.beats["ok#1"]) >= 3,
               what="the other bundles beaten")
    assert worker.counts["lost"] == 0 and worker.counts["completed"] == 0
    # The bundle given back runs again, here (its lease was released, not left to expire).
    wait_until(lambda: harness.runs().count("s1") == 2, what="the hung bundle run again")
    (tmp / "gate").touch()
    results = harness.collect(set().union(*map(ids_of, bundles)))
    assert all(len(copies) == 1 for copies in results.values())
    runs = harness.runs()
    # The first copy of task 1 was ended before the gate: one end only, of the second.
    assert sorted(runs) == ["e1", "e2", "e3", "s1", "s1", "s2", "s3"]
    assert runs.index("e1") > len(runs) - 4
    wait_until(lambda: worker.counts["completed"] == 3, what="every bundle completed")
    # The hung call lands at last: it cannot extend the lease the bundle no longer holds.
    harness.leases.unhang.set()
    assert harness.leases.lookup("hung#0").outcome == "COMPLETED"
    assert worker.counts["expired"] == 1 and worker.counts["lost"] == 0


def test_the_heartbeat_keeps_up_with_1024_bundles_on_a_slow_store(harness):
    # Each beat's lease write takes 20 ms: one after the other, 1,024 take 20.5 s, half as
    # long again as a lease; on the beat pool every bundle is beaten before its lease runs
    # out, or the worker would end and give up the bundles whose beats did not land
    # (`expired`). (The tasks are CloudKon's `sleep N`, in milliseconds: a minute.)
    harness.leases = SlowLeaseStore(harness.clock, delay=0.02)
    # A beat every 5 s, a lease of 13.5 s: room for a machine loaded by other tests.
    n, visibility = 1024, 15
    bundles = [Bundle("many", seq, [(seq + 1, "sleep 60000")]) for seq in range(n)]
    harness.inbox.send_batch([encode_bundle(b, "out") for b in bundles])
    worker = harness.start(threads=n, visibility=visibility)
    wait_until(lambda: sum(1 for b in bundles if harness.leases.lookup(f"many#{b.seq}")) == n,
               timeout=60, what="every bundle claimed")
    wait_until(lambda: len(harness.leases.beats) == n
               and min(harness.leases.beats.values()) >= 2,
               timeout=30, what="every bundle beaten twice")
    assert worker.counts["expired"] == 0 and worker.counts["lost"] == 0
    assert all(harness.leases.lookup(f"many#{b.seq}").outcome == IN_PROGRESS for b in bundles)


def test_clocks_5_minutes_apart_take_no_live_lease_and_a_dead_one_after_a_lease_watched(
        harness):
    # The holder writes with a clock 5 minutes behind, the claimer's store client reads a
    # clock 5 minutes ahead: by expiry times, the lease would look long expired to it.
    tmp = harness.tmp_path
    leases, clock = harness.leases, harness.clock
    bundle = Bundle("skew", 0, [appending(tmp, 1)])
    leases.clock = lambda: clock() - 300
    assert leases.claim("skew#0", "alive/1", VISIBILITY).outcome == "CLAIMED"
    leases.clock = lambda: clock() + 300
    harness.send(bundle)
    worker = harness.start(clock=lambda: clock() + 300)
    wait_until(lambda: worker.counts["busy"] == 1, what="the lease found held")
    # The holder beats (it is alive): a lease's duration later the version has changed,
    # so the claimer watches afresh instead of taking it.
    leases.clock = lambda: clock() - 300
    assert leases.heartbeat("skew#0", "alive/1", VISIBILITY)
    leases.clock = lambda: clock() + 300
    clock.advance(VISIBILITY + 1)
    wait_until(lambda: worker.counts["busy"] == 2, what="the lease found held again")
    assert harness.runs() == [] and leases.lookup("skew#0").owner == "alive/1"
    # The holder dies: no more beats. A lease's duration of the same version later, the
    # claimer takes it over.
    clock.advance(VISIBILITY / 2)
    assert harness.runs() == []
    clock.advance(VISIBILITY / 2 + 1)
    results = harness.collect(ids_of(bundle))
    assert harness.runs() == ["1"] and len(results["skew:1"]) == 1
    assert leases.lookup("skew#0").attempt == 2
    assert not leases.heartbeat("skew#0", "alive/1", VISIBILITY)  # the old holder: fenced



def test_the_worker_that_found_a_dead_holders_lease_takes_it_over_after_one_watch(harness):
    # Found by the fault proxy (tests/test_faultproxy.py): when the message went back to the
    # queue after each busy receive, every worker that received it next started a watch of
    # its own, and the backoff doubled at each round; with three workers a killed worker's
    # bundle waited 37 s at a 4 s visibility. Now the first watcher keeps the message and
    # claims it again itself as soon as its watch ends, before anyone else can receive it.
    clock = harness.clock
    bundle = Bundle("orphan", 0, [appending(harness.tmp_path, 1)])
    assert harness.leases.claim("orphan#0", "dead/1", VISIBILITY * 0.9).outcome == "CLAIMED"
    harness.send(bundle)
    watcher = harness.start(threads=1)
    wait_until(lambda: watcher.counts["busy"] == 1, what="the lease found held")
    other = harness.start(threads=1)
    clock.advance(VISIBILITY * 0.9 + 0.1)  # the watch is over; the message still hidden
    results = harness.collect(ids_of(bundle))
    assert harness.runs() == ["1"] and len(results["orphan:1"]) == 1
    assert harness.leases.lookup("orphan#0").attempt == 2
    assert watcher.counts["completed"] == 1
    assert other.counts["received"] == 0 and other.counts["busy"] == 0


class _Throttled:
    """A boto3 client stand-in whose every call is throttled (a 503): what an AWS call on
    the heartbeat path meets when AWS is in trouble; it counts the attempts."""

    class exceptions:  # as boto3 names it
        ConditionalCheckFailedException = type("ConditionalCheckFailedException",
                                               (Exception,), {})

    def __init__(self) -> None:
        self.attempts = 0

    def _throttled(self, **params):
        from botocore.exceptions import ClientError

        self.attempts += 1
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                           "ResponseMetadata": {"HTTPStatusCode": 503}}, "Call")

    update_item = change_message_visibility = _throttled


def test_the_heartbeats_aws_calls_give_up_within_their_share_of_the_lease():
    from cloudkon import aws
    from cloudkon.backends import Message
    from cloudkon.backends.dynamodb import DynamoLeaseStore
    from cloudkon.backends.sqs import SqsQueue
    from cloudkon.config import AwsConfig
    from cloudkon.errors import AwsError
    from cloudkon.limits import (
        AWS_BEAT_ATTEMPT_SECONDS,
        AWS_BEAT_CONNECT_TIMEOUT_SECONDS,
        AWS_BEAT_READ_TIMEOUT_SECONDS,
        DEFAULT_VISIBILITY_SECONDS,
        EXTEND_BUDGET_SHARE,
        LEASE_SHARE_OF_VISIBILITY,
    )

    beat = _Throttled()
    leases = DynamoLeaseStore(_Throttled(), "t", beat_client=beat)
    queue = SqsQueue(_Throttled(), "https://sqs.example/1/q", beat_client=beat)
    # A budget of 7 s for each call (where other calls retry for a minute): retries start
    # only within its first second, an attempt taking up to 6 s on the beat's clients.
    lease = (AWS_BEAT_ATTEMPT_SECONDS + 1) / EXTEND_BUDGET_SHARE
    for extend in (lambda: leases.heartbeat("job#0", "a", lease),
                   lambda: queue.extend(Message("m", "", "r", 1), round(lease))):
        started, before = time.monotonic(), beat.attempts
        with pytest.raises(AwsError, match="ThrottlingException"):
            extend()
        assert time.monotonic() - started <= 1 + 0.5
        assert beat.attempts - before >= 2  # retried, within the budget
    # Each attempt is bounded by the short time-outs of the beat's clients, and fits the
    # budget of a default lease.
    client = aws.client("sqs", AwsConfig(region="us-east-1"), beat=True)
    assert client.meta.config.read_timeout == AWS_BEAT_READ_TIMEOUT_SECONDS
    assert client.meta.config.connect_timeout == AWS_BEAT_CONNECT_TIMEOUT_SECONDS
    default_lease = DEFAULT_VISIBILITY_SECONDS * LEASE_SHARE_OF_VISIBILITY
    assert AWS_BEAT_ATTEMPT_SECONDS < default_lease * EXTEND_BUDGET_SHARE
    # Both calls of a beat, at their worst, end within the beat interval.
    assert 2 * DEFAULT_VISIBILITY_SECONDS * EXTEND_BUDGET_SHARE <= DEFAULT_VISIBILITY_SECONDS / 3
