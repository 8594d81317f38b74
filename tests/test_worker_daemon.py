"""The worker daemon's behaviour, fast, on the in-memory backends (cloudkon/backends/memory.py).

The daemon runs in a thread of the test; queues and leases run on a clock the test moves,
so "after the visibility timeout" costs nothing. The same daemon against SQS and DynamoDB,
as real subprocesses, is in test_worker_aws.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clock import FakeClock
from conftest import wait_until

from cloudkon.backends import CLAIMED, COMPLETED, IN_PROGRESS
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from cloudkon.codec import decode_results, encode_bundle, pack_results, unpack_results
from cloudkon.config import WorkerConfig
from cloudkon.errors import AwsError, CloudKonError
from cloudkon.model import SUCCEEDED, Bundle, task_id
from worker.daemon import Worker

VISIBILITY = 30


class Harness:
    """In-memory queues and leases on one fake clock, and workers running on them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(time.time())
        self.broker = MemoryBroker(self.clock)
        self.inbox = self.broker.create("in", dead_letter="in-dlq", max_receives=10)
        self.outbox = self.broker.create("out")
        self.leases = MemoryLeaseStore(self.clock)
        self.results: dict[str, list[tuple]] = {}  # task id -> every copy that arrived
        self.workers: list[tuple[Worker, threading.Thread, list]] = []

    def send(self, bundle: Bundle, copies: int = 1) -> None:
        self.inbox.send_batch([encode_bundle(bundle, "out")] * copies)

    def start(self, threads: int = 2, visibility: int = VISIBILITY, broker=None,
              clock=None, complete_behind: bool = False) -> Worker:
        config = WorkerConfig(f"w{len(self.workers)}", threads=threads,
                              visibility_seconds=visibility, wait_seconds=0.2,
                              drain_seconds=30, liveness_seconds=600, task_timeout=60,
                              complete_behind=complete_behind)
        worker = Worker(self.inbox, broker or self.broker, self.leases, config,
                        clock=clock or self.clock)
        code: list[int] = []
        thread = threading.Thread(target=lambda: code.append(worker.run()), daemon=True)
        thread.start()
        self.workers.append((worker, thread, code))
        return worker

    def stop(self, worker: Worker, hard: bool = False, signum: int = signal.SIGTERM) -> int:
        for w, thread, code in self.workers:
            if w is worker:
                worker.stop(hard=hard, signum=signum)
                thread.join(60)
                assert not thread.is_alive(), "the worker did not stop"
                return code[0]
        raise AssertionError("not a worker of this harness")

    def collect(self, ids: set[str]) -> dict[str, list[tuple]]:
        """Receive results until every id in ``ids`` has arrived at least once."""
        def arrived() -> bool:
            for message in self.outbox.receive(10, 0, 600):
                rb = decode_results(message.body)
                for r in rb.results:
                    self.results.setdefault(task_id(rb.job_id, r[0]), []).append(
                        r + (rb.worker,))
                self.outbox.delete(message)
            return ids <= self.results.keys()

        wait_until(arrived, what=f"results of {len(ids)} tasks")
        return self.results

    def runs(self, name: str = "runs") -> list[str]:
        """Lines the tasks appended to a file: how often, and which, ran."""
        path = self.tmp_path / name
        return path.read_text().split() if path.exists() else []

    def close(self) -> None:
        for worker, thread, _ in self.workers:
            if thread.is_alive():
                worker.stop(hard=True)
                thread.join(30)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


def appending(tmp_path: Path, line: int, then: str = "") -> tuple[int, str]:
    """A task that appends its line number to the file `runs`, then does ``then``."""
    command = f"echo {line} >> {tmp_path / 'runs'}"
    return line, f"{command}; {then}" if then else command


def ids_of(bundle: Bundle) -> set[str]:
    return {task_id(bundle.job_id, line) for line, _ in bundle.tasks}


def stored(harness: Harness, job: str, results: list[tuple], owner: str = "gone/1") -> None:
    """Leave the lease store as a worker that completed the bundle, then crashed, left it."""
    packed, _ = pack_results(results, harness.leases.max_results_bytes)
    assert harness.leases.claim(f"{job}#0", owner, VISIBILITY).outcome == CLAIMED
    assert harness.leases.complete(f"{job}#0", owner, packed)


def test_bundles_run_and_their_results_arrive_once_per_task(harness):
    bundles = [Bundle("job", seq, [(seq * 10 + i, f"echo {seq}-{i}") for i in range(1, 4)])
               for seq in range(5)]
    for b in bundles:
        harness.send(b)
    worker = harness.start(threads=3)
    results = harness.collect(set().union(*map(ids_of, bundles)))
    assert all(len(copies) == 1 for copies in results.values())
    assert results["job:12"][0][2] == SUCCEEDED and results["job:12"][0][7] == "1-2\n"
    wait_until(lambda: len(harness.inbox) == 0, what="every message deleted")
    assert harness.leases.lookup("job#4").outcome == COMPLETED
    assert harness.stop(worker) == 0
    assert worker.counts["completed"] == 5


def test_same_bundle_sent_twice_runs_once(harness):
    bundle = Bundle("dup", 0, [appending(harness.tmp_path, 1), appending(harness.tmp_path, 2)])
    harness.send(bundle, copies=2)
    worker = harness.start(threads=2)
    harness.collect(ids_of(bundle))

    def second_copy_replayed() -> bool:
        # The copy that found the bundle leased was left to come back later: move time on,
        # until it has come back. Not after: its delete waits for the worker's next batch,
        # and time moved on meanwhile would bring it back once more, to be replayed again.
        if worker.counts["replayed"]:
            return True
        harness.clock.advance(VISIBILITY * 4)
        return False

    wait_until(second_copy_replayed, what="the second copy replayed")
    wait_until(lambda: len(harness.inbox) == 0, what="both copies deleted")
    assert harness.runs() == ["1", "2"]
    for copies in harness.results.values():
        assert all(copy == copies[0] for copy in copies)  # a replay sends what was stored
    assert worker.counts["completed"] == 1 and worker.counts["replayed"] == 1


def test_completed_bundle_is_replayed_from_the_store_not_run_again(harness):
    bundle = Bundle("done", 0, [appending(harness.tmp_path, 1)])
    t = time.time()
    stored(harness, "done", [(1, "", SUCCEEDED, 0, None, t, t + 1, "stored output\n", "")])
    harness.send(bundle)
    worker = harness.start()
    results = harness.collect(ids_of(bundle))
    assert results["done:1"][0][7] == "stored output\n"
    assert results["done:1"][0][-1] == "gone"  # the worker that ran it, not this one
    wait_until(lambda: len(harness.inbox) == 0, what="message deleted")
    assert harness.runs() == []
    assert worker.counts["replayed"] == 1


class _FirstSendFails:
    """A broker whose queues fail their first send, as if the worker crashed right after
    storing COMPLETED and before the results went out."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.failed = False

    def queue(self, name: str):
        outer = self
        inner = self.broker.queue(name)

        class Queue:
            def send_batch(self, bodies):
                if not outer.failed:
                    outer.failed = True
                    raise AwsError("send: connection lost (injected)")
                inner.send_batch(bodies)

        return Queue()


def test_results_lost_after_completion_are_replayed_on_redelivery_without_rerun(harness):
    bundle = Bundle("crash", 0, [appending(harness.tmp_path, 1)])
    harness.send(bundle)
    worker = harness.start(broker=_FirstSendFails(harness.broker))
    wait_until(lambda: worker.counts["failed"] == 1, what="the failed send")
    assert harness.leases.lookup("crash#0").outcome == COMPLETED
    harness.clock.advance(VISIBILITY + 1)  # the message comes back
    harness.collect(ids_of(bundle))
    wait_until(lambda: len(harness.inbox) == 0, what="message deleted")
    assert harness.runs() == ["1"]
    assert worker.counts["replayed"] == 1 and worker.counts["completed"] == 0


def test_expired_lease_is_taken_over_and_only_unfinished_tasks_run(harness):
    tmp = harness.tmp_path
    bundle = Bundle("take", 0, [appending(tmp, 1), appending(tmp, 2), appending(tmp, 3)])
    harness.send(bundle)
    # A first worker received it, ran task 1, stored its result in a heartbeat, and died.
    assert len(harness.inbox.receive(1, 0, VISIBILITY)) == 1
    assert harness.leases.claim("take#0", "dead/1", VISIBILITY).outcome == CLAIMED
    t = time.time()
    first, _ = pack_results([(1, "", SUCCEEDED, 0, None, t, t, "by the first\n", "")], 10_000)
    assert harness.leases.heartbeat("take#0", "dead/1", VISIBILITY, first)
    harness.clock.advance(VISIBILITY + 1)
    worker = harness.start()
    # The lease's expiry by the dead worker's clock says nothing here: the worker watches
    # its record version for a lease's duration by its own clock, then takes it over.
    wait_until(lambda: worker.counts["busy"] == 1, what="the lease found held")
    assert harness.runs() == []
    harness.clock.advance(VISIBILITY + 1)
    results = harness.collect(ids_of(bundle))
    assert harness.runs() == ["2", "3"]
    assert results["take:1"][0][7] == "by the first\n"
    assert all(len(copies) == 1 for copies in results.values())
    assert harness.leases.lookup("take#0").attempt == 2
    assert worker.counts["completed"] == 1


def test_bundle_leased_by_a_live_worker_is_left_alone_then_replayed(harness):
    bundle = Bundle("busy", 0, [appending(harness.tmp_path, 1)])
    assert harness.leases.claim("busy#0", "other/1", VISIBILITY).outcome == CLAIMED
    harness.send(bundle)
    worker = harness.start()
    wait_until(lambda: worker.counts["busy"] == 1, what="the bundle found leased")
    assert harness.inbox.visible() == 0  # left hidden, to come back later
    t = time.time()
    packed, _ = pack_results([(1, "", SUCCEEDED, 0, None, t, t, "by the other\n", "")], 10_000)
    assert harness.leases.complete("busy#0", "other/1", packed)
    harness.clock.advance(VISIBILITY * 4)
    results = harness.collect(ids_of(bundle))
    assert results["busy:1"][0][7] == "by the other\n"
    assert harness.runs() == []


def test_undecodable_message_goes_to_the_dead_letter_queue_and_work_goes_on(harness):
    harness.inbox.send_batch(["{not json", '{"v": 99}'])
    bundle = Bundle("after", 0, [(1, "echo fine")])
    harness.send(bundle)
    worker = harness.start()
    harness.collect(ids_of(bundle))
    dead = harness.broker.queue("in-dlq")
    wait_until(lambda: len(dead) == 2, what="both poison messages dead-lettered")
    assert sorted(m.body for m in dead.receive(10, 0, 30)) == ['{"v": 99}', "{not json"]
    assert worker.counts["dead_lettered"] == 2


def test_worker_holds_no_more_messages_than_idle_threads(harness):
    gate = harness.tmp_path / "gate"
    wait = f"while [ ! -e {gate} ]; do /bin/sleep 0.05; done"
    bundles = [Bundle("gated", seq, [appending(harness.tmp_path, seq + 1, wait)])
               for seq in range(5)]
    for b in bundles:
        harness.send(b)
    harness.start(threads=2)
    wait_until(lambda: len(harness.runs()) == 2, what="two tasks started")
    assert harness.inbox.visible() == 3  # the other three were never received
    gate.touch()
    harness.collect(set().union(*map(ids_of, bundles)))


def test_stop_lets_running_task_finish_and_gives_the_rest_back_at_once(harness):
    tmp = harness.tmp_path
    gate = tmp / "gate"
    gated = f"while [ ! -e {gate} ]; do /bin/sleep 0.05; done"
    bundle = Bundle("drain", 0, [appending(tmp, 1, gated), appending(tmp, 2)])
    harness.send(bundle)
    worker = harness.start(threads=1)
    wait_until(lambda: harness.runs() == ["1"], what="task 1 started")
    stopping = threading.Thread(target=lambda: harness.stop(worker))
    stopping.start()
    wait_until(lambda: worker._draining.is_set(), what="the drain")
    gate.touch()  # task 1 may now finish
    stopping.join(60)
    assert worker.counts["given_back"] == 1
    assert harness.runs() == ["1"]  # task 2 never started
    assert harness.inbox.visible() == 1  # visible at once: the clock has not moved
    record = harness.leases.lookup("drain#0")
    assert record.outcome == IN_PROGRESS and record.lease_expires == 0
    assert [r[0] for r in unpack_results(record.results, bundle.tasks)] == [1]
    # The next worker runs only what is left.
    harness.start(threads=1)
    harness.collect(ids_of(bundle))
    assert harness.runs() == ["1", "2"]


def test_drain_returns_0(harness):
    worker = harness.start()
    assert harness.stop(worker) == 0


def test_hard_stop_ends_running_tasks_and_gives_everything_back(harness):
    bundle = Bundle("hard", 0, [appending(harness.tmp_path, 1, "/bin/sleep 60")])
    harness.send(bundle)
    worker = harness.start(threads=1)
    wait_until(lambda: harness.runs() == ["1"], what="task started")
    started = time.monotonic()
    assert harness.stop(worker, hard=True, signum=signal.SIGINT) == 128 + signal.SIGINT
    assert time.monotonic() - started < 30  # not the task's 60 s
    assert harness.inbox.visible() == 1
    assert harness.leases.claim("hard#0", "next/1", VISIBILITY).outcome == CLAIMED
    assert harness.leases.lookup("hard#0").results is None or \
        unpack_results(harness.leases.lookup("hard#0").results, bundle.tasks) == []


def test_worker_that_lost_its_lease_drops_its_results(harness):
    gate = harness.tmp_path / "gate"
    bundle = Bundle("fenced", 0, [appending(harness.tmp_path, 1,
                                            f"while [ ! -e {gate} ]; do /bin/sleep 0.05; done")])
    harness.send(bundle)
    worker = harness.start(threads=1, visibility=3)  # a heartbeat every second
    wait_until(lambda: harness.runs() == ["1"], what="task started")
    # Another claimer took it over (as after watching its record version stand still).
    wait_until(lambda: harness.leases.claim(
        "fenced#0", "thief/1", VISIBILITY, harness.leases.lookup("fenced#0").rvn
    ).outcome == CLAIMED, what="the lease taken over")
    # Found by the next heartbeat, which ends the task (without the gate), or by the
    # completion, whichever comes first: both fenced.
    wait_until(lambda: worker.counts["lost"] == 1, what="lease lost")
    gate.touch()
    assert harness.leases.lookup("fenced#0").owner == "thief/1"
    assert harness.leases.lookup("fenced#0").outcome == IN_PROGRESS
    assert harness.outbox.visible() == 0


def test_bundles_of_a_cancelled_job_are_deleted_at_claim_without_running(harness):
    tmp = harness.tmp_path
    harness.leases.cancel_job("gone")
    cancelled = [Bundle("gone", seq, [appending(tmp, seq + 1)]) for seq in range(3)]
    for b in cancelled:
        harness.send(b)
    other = Bundle("kept", 0, [appending(tmp, 9)])
    harness.send(other)
    worker = harness.start(threads=2)
    harness.collect(ids_of(other))
    wait_until(lambda: len(harness.inbox) == 0, what="every message deleted")
    assert harness.runs() == ["9"]
    assert worker.counts["cancelled"] == 3 and worker.counts["completed"] == 1
    assert harness.leases.lookup("gone#0") is None  # never claimed
    assert not any(key.startswith("gone:") for key in harness.results)


def test_cancel_ends_the_running_task_at_the_next_heartbeat_and_completes_what_finished(harness):
    tmp = harness.tmp_path
    bundle = Bundle("stop", 0, [appending(tmp, 1), appending(tmp, 2, "/bin/sleep 60"),
                                appending(tmp, 3)])
    harness.send(bundle)
    worker = harness.start(threads=1, visibility=3)  # a heartbeat every second
    wait_until(lambda: harness.runs() == ["1", "2"], what="task 2 running")
    started = time.monotonic()
    harness.leases.cancel_job("stop")
    wait_until(lambda: worker.counts["cancelled"] == 1, what="the cancel seen")
    assert time.monotonic() - started < 10  # a heartbeat or two, not the task's 60 s
    results = harness.collect({"stop:1"})
    wait_until(lambda: len(harness.inbox) == 0, what="the message deleted, not given back")
    assert harness.runs() == ["1", "2"]  # task 3 never started
    assert sorted(results) == ["stop:1"]  # the ended task is no result
    record = harness.leases.lookup("stop#0")
    assert record.outcome == COMPLETED
    assert [r[0] for r in unpack_results(record.results, bundle.tasks)] == [1]
    # A late copy of the bundle is not run either.
    harness.send(bundle)
    wait_until(lambda: len(harness.inbox) == 0, what="the copy deleted")
    assert harness.runs() == ["1", "2"] and worker.counts["cancelled"] == 2


def test_a_retry_bundle_runs_under_its_own_key_beside_the_first_attempts_completed_lease(harness):
    tmp = harness.tmp_path
    t = time.time()
    stored(harness, "again", [(1, "", "failed", 1, None, t, t, "", "")])
    harness.send(Bundle("again", 0, [appending(tmp, 1)], attempt=2))
    harness.start()
    results = harness.collect({"again:1"})
    assert harness.runs() == ["1"]  # run, not replayed from attempt 1's lease
    assert results["again:1"][0][2] == SUCCEEDED
    assert harness.leases.lookup("again#a2#0").outcome == COMPLETED


class _SlowCompletions(MemoryLeaseStore):
    """Leases whose completion of bundle ``job#0`` waits for ``gate`` (a slow AWS call),
    or fails once with ``fail``."""

    def __init__(self, clock, fail: CloudKonError | None = None) -> None:
        super().__init__(clock)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail = fail
        self.claimed_at: dict[str, float] = {}  # key -> time.monotonic() of its last claim

    def claim(self, key: str, *args, **kwargs):
        self.claimed_at[key] = time.monotonic()
        return super().claim(key, *args, **kwargs)

    def complete(self, key: str, *args, **kwargs) -> bool:
        if key == "job#0":
            self.entered.set()
            if self.fail is not None:
                fail, self.fail = self.fail, None
                raise fail
            assert self.gate.wait(60)
        return super().complete(key, *args, **kwargs)


def test_a_bundle_is_completed_behind_while_its_thread_runs_the_next(harness):
    harness.leases = leases = _SlowCompletions(harness.clock)
    first = Bundle("job", 0, [appending(harness.tmp_path, 1)])
    second = Bundle("job", 1, [appending(harness.tmp_path, 2)])
    harness.send(first)
    harness.send(second)
    worker = harness.start(threads=1, complete_behind=True)

    # The one thread ran the second bundle while the first one's completion hung.
    wait_until(lambda: harness.runs() == ["1", "2"], what="both bundles run")
    assert leases.entered.is_set() and leases.lookup("job#0").outcome != COMPLETED
    assert not harness.outbox.receive(10, 0, 600)  # nothing sent before its completion
    leases.gate.set()
    results = harness.collect(ids_of(first) | ids_of(second))
    assert all(len(copies) == 1 for copies in results.values())
    wait_until(lambda: len(harness.inbox) == 0, what="both messages deleted")
    assert harness.stop(worker) == 0
    assert worker.counts["completed"] == 2 and worker.counts["given_back"] == 0


def test_a_drain_waits_for_the_completions_behind(harness):
    harness.leases = leases = _SlowCompletions(harness.clock)
    bundle = Bundle("job", 0, [appending(harness.tmp_path, 1)])
    harness.send(bundle)
    worker = harness.start(threads=1, complete_behind=True)
    assert leases.entered.wait(30)
    codes: list[int] = []
    stopping = threading.Thread(target=lambda: codes.append(harness.stop(worker)))
    stopping.start()
    wait_until(lambda: worker._draining.is_set(), what="the drain")

    stopping.join(0.5)
    assert stopping.is_alive()  # still waiting for the completion
    leases.gate.set()
    stopping.join(60)
    assert codes == [0]
    assert leases.lookup("job#0").outcome == COMPLETED
    assert harness.collect(ids_of(bundle))
    assert len(harness.inbox) == 0 and worker.counts["given_back"] == 0


def test_a_completion_behind_that_fails_leaves_its_message_and_the_thread_goes_on(harness):
    harness.leases = _SlowCompletions(harness.clock, fail=AwsError("completing failed: throttled", "Throttling"))
    first = Bundle("job", 0, [appending(harness.tmp_path, 1)])
    second = Bundle("job", 1, [appending(harness.tmp_path, 2)])
    harness.send(first)
    harness.send(second)
    worker = harness.start(threads=1, complete_behind=True)

    harness.collect(ids_of(second))
    wait_until(lambda: worker.counts["failed"] == 1, what="the failed completion counted")
    assert ids_of(first).isdisjoint(harness.results)  # never sent
    assert len(harness.inbox) == 1  # the first bundle's message, to come back
    assert harness.stop(worker) == 0


_STUCK_COMPLETION = """
import signal, sys, threading
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from cloudkon.codec import encode_bundle
from cloudkon.config import WorkerConfig
from cloudkon.model import Bundle
from worker import daemon

daemon._GIVE_BACK_SECONDS = 0.5
entered = threading.Event()

class Stuck(MemoryLeaseStore):
    def complete(self, *args, **kwargs):
        entered.set()
        threading.Event().wait()  # an AWS call that never answers

broker = MemoryBroker()
inbox = broker.create("in")
broker.create("out")
inbox.send_batch([encode_bundle(Bundle("job", 0, [(1, "true")]), "out")])
worker = daemon.Worker(inbox, broker, Stuck(), WorkerConfig(
    "w", threads=1, visibility_seconds=30, wait_seconds=0.2, drain_seconds=30,
    liveness_seconds=600, task_timeout=60, complete_behind=True))
threading.Thread(target=lambda: entered.wait(30) and worker.stop(True, signal.SIGINT)).start()
sys.exit(worker.run())
"""


def test_a_hard_stop_exits_at_once_with_a_completion_stuck_behind(tmp_path):
    # The worker's process, not only run(): a completion stuck in an AWS call must not keep
    # it from exiting (a ThreadPoolExecutor's threads are joined at the interpreter's exit),
    # as a bundle thread stuck there does not.
    root = Path(__file__).resolve().parent.parent
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _STUCK_COMPLETION], check=False, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert time.monotonic() - started < 20
    assert "gave back 1 messages still held at exit" in done.stderr


class _Ended(BaseException):
    """Not an Exception: what ends a thread rather than a step."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_completion_behind_ended_by_a_base_exception_leaves_no_message_held(harness):
    harness.leases = _SlowCompletions(harness.clock, fail=_Ended())
    harness.send(Bundle("job", 0, [appending(harness.tmp_path, 1)]))
    harness.send(Bundle("job", 1, [appending(harness.tmp_path, 2)]))
    worker = harness.start(threads=1, complete_behind=True)

    # The thread ran the second bundle, then found its first one's completion ended so.
    wait_until(lambda: harness.runs() == ["1", "2"], what="both bundles run")
    wait_until(lambda: not worker._threads[1].is_alive(), what="the bundle thread ended")
    assert not worker._held and not worker._completing  # both come back by their timeout
    assert len(harness.inbox) == 2


def test_a_bundle_whose_lease_ran_out_while_it_waited_to_be_completed_behind_is_given_up(
        harness):
    # Its thread waits for the completion before (hung) to hand it over; no beat keeps a
    # finished bundle's lease meanwhile. Once that lease is gone by the worker's clock, the
    # bundle is given up with its results stored, not completed late: the next claim finds
    # every task done and completes it, nothing runs twice.
    harness.leases = leases = _SlowCompletions(harness.clock)
    first = Bundle("job", 0, [appending(harness.tmp_path, 1)])
    second = Bundle("job", 1, [appending(harness.tmp_path, 2)])
    harness.send(first)
    harness.send(second)
    worker = harness.start(threads=1, visibility=2, complete_behind=True)
    wait_until(lambda: harness.runs() == ["1", "2"], what="both bundles run")
    over = leases.claimed_at["job#1"] + worker._lease_held_seconds  # by the worker's clock
    wait_until(lambda: time.monotonic() > over, what="the second bundle's lease over")
    leases.gate.set()

    wait_until(lambda: worker.counts["expired"] == 1, what="the second bundle given up")
    harness.clock.advance(10)  # its message, given back, and the first one's lease
    results = harness.collect(ids_of(first) | ids_of(second))
    assert all(len(copies) == 1 for copies in results.values())
    assert harness.runs() == ["1", "2"]  # nothing ran twice
    assert harness.stop(worker) == 0


def test_a_worker_never_receives_a_message_no_idle_thread_can_start(harness):
    # Many quick bundles on 3 threads, completed behind: every receive is made by an idle
    # thread for idle threads. A thread that found the receiving let go just before the
    # receiving thread handed its extra messages over used to receive one more, to wait in
    # the worker unwatched.
    bundles = [Bundle("job", seq, [(seq + 1, "true")]) for seq in range(300)]
    for b in bundles:
        harness.send(b)
    receive = harness.inbox.receive
    busy_at_receive: list[int] = []

    def watched_receive(*args, **kwargs):
        if harness.workers:
            worker = harness.workers[0][0]
            with worker._slots_lock:  # no thread running, being handed one, or completing
                busy_at_receive.append(len(worker._held) - len(worker._completing))
        return receive(*args, **kwargs)

    harness.inbox.receive = watched_receive
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: a window of a few steps opens
    try:
        worker = harness.start(threads=3, complete_behind=True)
        results = harness.collect(set().union(*map(ids_of, bundles)))
        assert harness.stop(worker) == 0
    finally:
        sys.setswitchinterval(switching)
    assert all(len(copies) == 1 for copies in results.values())
    assert busy_at_receive and max(busy_at_receive) < 3
