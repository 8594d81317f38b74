"""The worker daemon: receive bundles, claim them, run them, report, delete; until SIGTERM.

It is written against :mod:`cloudkon.backends` and never sees boto3: the same loop runs on
SQS and DynamoDB for ``cloudkon worker`` and on the in-memory backends of
``cloudkon/backends/memory.py`` for ``cloudkon run`` (``local/runner.py``), its bodies then
passed as objects (:class:`~cloudkon.codec.InProcessCodec`). Threads:

- N bundle threads receive in turn, as leader and followers: an idle thread that finds
  no message handed to it, and no other thread receiving, long-polls the input queue
  itself, for as many messages as there are idle threads (so that every message the
  worker holds starts at once); it keeps one, hands the rest to idle threads and the
  receiving to the next idle one. A thread that finishes a bundle while messages wait
  takes the next without waking anyone. Each bundle thread follows the protocol of
  docs/design.md (section 5): claim the bundle's lease (one conditional write; a lease
  held by another worker is taken over only after this worker has seen its record version
  unchanged for a lease's duration, by its own clock), run its tasks with the shared
  :class:`~cloudkon.executor.Executor`, store the results with
  COMPLETED, send them, delete the message (for ``cloudkon worker``, on a pool of
  completion threads, while the bundle thread goes on to the next bundle). A bundle found
  COMPLETED is replayed (its stored results sent again), not run; one whose lease is live
  elsewhere is left for later;
- the heartbeat thread schedules, for each running bundle whose beat is due, one beat on a
  small pool of beat threads (so that a slow call delays only its own bundle): a beat keeps
  the message invisible and the lease alive, and stores the results of finished tasks, so a
  takeover runs only the rest. Between beats, a bundle with tasks finished since its
  results were last stored has them stored within RESULTS_STORE_SECONDS by the lease's
  write alone (one UpdateItem per bundle per interval, never one per task). No lock is held across its calls, each of which gives up
  within a share of the lease. The heartbeat thread also watches each bundle's lease by the
  worker's own clock: a bundle whose last landed beat was sent more than a lease ago (less
  a guard) has its running task ended and its lease given up, and nothing of it completed;
- the main thread waits for signals (their handlers only set flags), logs a liveness line
  and runs the shutdown.

A cancelled job (`cloudkon cancel`, read through ``LeaseStore.job_state``, cached for a few
seconds and read again at each heartbeat) runs no more: its bundles are deleted at claim
without running, and a running bundle of it has its running task ended at the next
heartbeat; the tasks that finished before are completed and sent, nothing is given back.

SIGTERM: receive no more; give back what has not started (visibility 0, lease released,
finished results stored); let running tasks finish within the drain time, then stop their
bundles and give the rest back; exit 0. A second SIGTERM, or SIGINT, ends running tasks,
gives everything back and exits at once with 128 + the signal's number. Either way the
receive in flight is waited for, not abandoned (SQS would keep what it picked for an
abandoned poll invisible until its visibility timeout), and what it brings is given back
at once: receives are short (``wait_seconds``, 1 s by default), so an idle worker exits
within about a second.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from cloudkon import __version__
from cloudkon.backends import (
    BUSY,
    COMPLETED,
    JOB_CANCELLED,
    Broker,
    Claim,
    LeaseStore,
    Message,
    MessageQueue,
    WorkerRecord,
    WorkerRegistry,
)
from cloudkon.codec import WIRE, WireCodec
from cloudkon.config import WorkerConfig
from cloudkon.errors import CloudKonError, CodecError, NotSetUpError, SignatureError
from cloudkon.executor import Executor, TaskHandle, signal_name
from cloudkon.limits import (
    AWS_ERROR_PAUSE_SECONDS,
    HEARTBEAT_MAX_CONCURRENT,
    JOB_STATE_CACHE_SECONDS,
    LEASE_GUARD_SHARE,
    LEASE_OBSERVATIONS_KEPT,
    LEASE_SHARE_OF_VISIBILITY,
    QUEUE_GONE_EXIT_SECONDS,
    RESULTS_STORE_SECONDS,
    SQS_MAX_BATCH,
    SQS_MAX_VISIBILITY_SECONDS,
    WATCH_RETRY_MARGIN_SECONDS,
    WORKER_STALE_BEATS,
)
from cloudkon.metrics import BundleMetrics
from cloudkon.model import SUCCEEDED, Bundle, ResultBundle, bundle_key
from worker.deletes import DeleteBatcher

log = logging.getLogger(__name__)

_TICK = 0.1  # seconds between the main thread's looks at its flags
_GIVE_BACK_SECONDS = 10.0  # after a hard stop, how long bundle threads get to give back
_END = None  # tells a bundle thread to exit
_LEAD = object()  # tells an idle bundle thread that nobody is receiving: it may now
EXIT_QUEUE_GONE = 2  # the input queue was deleted under the worker (as for --no-create)
_JOB_STATES_KEPT = 1024  # job states cached at most; then the cache starts afresh
_Completion = Callable[[], None]  # completes a bundle that ran: store, send, delete


@dataclass
class _Running:
    """A bundle being run: what the heartbeat needs, shared under ``lock``."""

    message: Message
    bundle: Bundle
    key: str
    owner: str
    results: list[tuple]  # of finished tasks, those from earlier owners first
    stored: int  # how many of ``results`` the lease store already has
    next_beat: float  # time.monotonic() of the next heartbeat
    claimed_at: float = 0.0  # time.monotonic() of the claim
    stored_at: float = 0.0  # time.monotonic() of the last write that stored results
    expires: float = math.inf  # time.monotonic() past which the lease counts as gone
    lost: bool = False  # the lease went to another owner: stop and drop the results
    expired: bool = False  # no beat landed within the lease: stop, give it up, drop results
    cancelled: bool = False  # the job was cancelled: stop, complete with what finished
    finished: bool = False  # the bundle thread is completing or giving back: no more beats
    beating: bool = False  # a beat is in flight (its calls made without the lock)
    handle: TaskHandle = field(default_factory=TaskHandle)  # ends this bundle's tasks
    lock: threading.Lock = field(default_factory=threading.Lock)


class Counts:
    """What the worker has done, for the liveness line."""

    NAMES = ("received", "completed", "replayed", "busy", "given_back", "dead_lettered",
             "lost", "expired", "failed", "cancelled", "tasks")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Worker:
    """One worker daemon. ``run()`` serves until :meth:`stop` (or a signal) and returns the
    exit code. With a ``registry``, ``run()`` keeps this worker's record in it every
    heartbeat interval and removes it at exit; with ``metrics``, each bundle completed or
    replayed is reported there. ``clock`` (monotonic seconds) times the watch of other
    workers' leases before a takeover."""

    def __init__(self, inbox: MessageQueue, broker: Broker, leases: LeaseStore,
                 config: WorkerConfig, executor: Executor | None = None,
                 codec: WireCodec = WIRE, registry: WorkerRegistry | None = None,
                 metrics: BundleMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.broker = broker
        self.leases = leases
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.started = time.time()
        self.codec = codec  # how bodies and stored results are made: must match the backends'
        self.executor = executor or Executor(config.task_timeout, config.tail_bytes,
                                              config.task_env)
        self.counts = Counts()
        self.lease_seconds = config.visibility_seconds * LEASE_SHARE_OF_VISIBILITY
        # By the worker's own clock, how long after sending a claim or a beat that landed
        # it still counts the lease as its own.
        self._lease_held_seconds = self.lease_seconds * (1 - LEASE_GUARD_SHARE)
        self.clock = clock
        # Leases held by others, watched for a takeover: key -> (record version, clock()
        # when first seen, the holder's lease seconds).
        self._observed: dict[str, tuple[str, float, float]] = {}
        self._observed_lock = threading.Lock()
        # Messages of leases being watched, kept hidden to be claimed again here when the
        # watch ends: receipt -> (message, clock() when the watch ends). Under _observed_lock.
        self._watching: dict[str, tuple[Message, float]] = {}
        self._rewatched: set[str] = set()  # receipts claimed again so: watched only once
        self._beats = ThreadPoolExecutor(min(config.threads, HEARTBEAT_MAX_CONCURRENT),
                                         thread_name_prefix="cloudkon-beat")
        self._beat_done = threading.Condition()  # notified as each beat ends
        # Set by signal handlers and stop(): plain attributes, read by the main loop.
        self._drain_signal: int | None = None
        self._hard_signal: int | None = None
        self._draining = threading.Event()  # receive no more, start no more tasks
        self._halt = threading.Event()  # the heartbeat thread ends
        self._handoff: queue.SimpleQueue = queue.SimpleQueue()
        # Entered directly (``with self._slots_lock``: no Python-level wrapper, once per
        # bundle step); the Condition on it only for waits and notifies. Reentrant:
        # _wait_until's predicates take it again.
        self._slots_lock = threading.RLock()
        self._slots = threading.Condition(self._slots_lock)
        self._held: dict[str, Message] = {}  # receipt -> message, from receive to done
        self._completing: set[str] = set()  # receipts of held bundles completed behind
        # Completions of bundles that ran, in the background (config.complete_behind).
        self._completer = (_Completer(config.threads, "cloudkon-complete")
                           if config.complete_behind else None)
        self._running: dict[str, _Running] = {}  # receipt -> running bundle
        # Fencing tokens: the worker, a random name for this run of it, a count of claims.
        self._owner_prefix = f"{config.worker_id}/{os.urandom(4).hex()}-"
        self._claims = itertools.count(1)
        self._receiving = threading.Lock()  # held by the thread that receives
        self._receive_noted = False  # the stop said it waits for the receive in flight
        self._followers = 0  # idle threads waiting on the handoff (under _slots)
        self._outboxes: dict[str, MessageQueue] = {}  # results queues by name
        # Deletes finished bundles' messages, in batches with config.delete_batch_seconds.
        self._deletes = DeleteBatcher(inbox, config.delete_batch_seconds)
        self._threads: list[threading.Thread] = []
        self._gone_since: float | None = None  # since when receives find no input queue
        self._gone: NotSetUpError | None = None  # why the worker stops to exit 2
        # job id -> (cancelled, time.monotonic() of the read)
        self._job_states: dict[str, tuple[bool, float]] = {}
        self._job_states_lock = threading.Lock()
        self._job_state_seconds = min(JOB_STATE_CACHE_SECONDS, config.heartbeat_seconds)

    # --- control ---------------------------------------------------------------------------

    def stop(self, hard: bool = False, signum: int = 0) -> None:
        """Ask the worker to drain (or, ``hard``, to give everything back and exit now);
        ``signum`` is the signal that asked, 0 for the program itself. Safe in a signal
        handler: it only sets attributes."""
        if hard or self._drain_signal is not None:
            self._hard_signal = signum
        else:
            self._drain_signal = signum

    def _on_signal(self, signum, frame) -> None:
        self.stop(hard=signum != signal.SIGTERM, signum=signum)

    def _stopping(self) -> bool:
        """True from the moment a stop is asked for: the flags are read directly, not
        through the main loop, so nothing starts in between."""
        return (self._drain_signal is not None or self._hard_signal is not None
                or self._draining.is_set())

    def run(self) -> int:
        """Serve until a signal or :meth:`stop`; return 0 after a drain, 128 + signal after
        a hard stop. The daemon's main thread: it installs the signal handlers."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self._on_signal)
                        for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            log.info("worker %s serving queue %s with %d threads (visibility %d s, heartbeat"
                     " every %.0f s, drain %.0f s)", self.config.worker_id, self.inbox.name,
                     self.config.threads, self.config.visibility_seconds,
                     self.config.heartbeat_seconds, self.config.drain_seconds)
            next_liveness = time.monotonic() + self.config.liveness_seconds
            next_record = time.monotonic()
            while self._drain_signal is None and self._hard_signal is None:
                if time.monotonic() >= next_record:
                    self._register()
                    next_record = time.monotonic() + self.config.heartbeat_seconds
                time.sleep(_TICK)
                if time.monotonic() >= next_liveness:
                    self._log_liveness()
                    next_liveness += self.config.liveness_seconds
            return self.shutdown()
        finally:
            self._unregister()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        """Start receiving and running bundles in background threads; :meth:`stop` then
        :meth:`shutdown` end them. (``run()`` does all three, for the daemon.)"""
        self._threads = [threading.Thread(target=self._heartbeat_loop, name="cloudkon-heartbeat",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._work_loop, name=f"cloudkon-bundle-{i}",
                                           daemon=True)
                          for i in range(self.config.threads)]
        for t in self._threads:
            t.start()

    def shutdown(self) -> int:
        """After :meth:`stop`: drain or hand back what the worker holds, as asked, and end
        its threads; return the exit code (0, or 128 + signal after a hard stop)."""
        self._draining.set()
        with self._slots_lock:
            self._slots.notify_all()
        if self._hard_signal is None:
            # A stop the program asked for (the end of a local run) is no news.
            say = log.warning if self._drain_signal else log.info
            say("%s: stopping: receiving no more, giving back unstarted bundles, letting"
                " running tasks finish for up to %.0f s", _stop_name(self._drain_signal),
                self.config.drain_seconds)
            self._note_receive()
            self._wait_until(lambda: self._idle() or self._hard_signal is not None,
                             self.config.drain_seconds)
            if not self._idle() and self._hard_signal is None:
                log.warning("drain time over: ending %d running bundles' tasks and giving"
                            " them back", len(self._running))
        if self._hard_signal is not None:
            say = log.warning if self._hard_signal else log.info
            say("%s: ending running tasks, giving everything back, exiting now",
                _stop_name(self._hard_signal))
        self.executor.cancel()
        # Bundle threads now give back what they hold, and the receive in flight what it
        # brings: a hard stop waits for it too (a poll is short), so that nothing it
        # received stays invisible; one that outlasts _GIVE_BACK_SECONDS is left.
        self._note_receive()
        self._wait_until(self._idle, _GIVE_BACK_SECONDS)
        self._halt.set()
        self._beats.shutdown(wait=False, cancel_futures=True)
        if self._completer is not None:
            self._completer.shutdown()
        for _ in range(self.config.threads):
            self._handoff.put(_END)
        self._give_back_leftovers()
        self._deletes.close(_GIVE_BACK_SECONDS)  # finished bundles' messages still pending
        self._log_liveness("stopped")
        if self._gone is not None:
            log.error("%s, for %.0f s: exiting (was the deployment torn down?)", self._gone,
                      QUEUE_GONE_EXIT_SECONDS)
            return EXIT_QUEUE_GONE
        if self._hard_signal is not None:
            return 128 + self._hard_signal
        return 0

    def _wait_until(self, done, seconds: float) -> None:
        """Wait until ``done()`` or ``seconds`` pass; bundle threads and the receiving notify
        ``_slots`` as they let go, and a signal's flag is seen within a tick."""
        deadline = time.monotonic() + seconds
        with self._slots_lock:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._slots.wait(min(remaining, _TICK))

    def _note_receive(self) -> None:
        """Say, once, that the stop waits for a receive in flight."""
        if self._receive_noted or not self._receiving.locked():
            return
        self._receive_noted = True
        log.info("waiting for the receive in flight (up to %.0f s) to give back what it"
                 " brings", self.config.wait_seconds)

    def _idle(self) -> bool:
        return self._nothing_held() and not self._receiving.locked()

    def _nothing_held(self) -> bool:
        with self._slots_lock:
            return not self._held

    def _give_back_leftovers(self) -> None:
        """Give back what bundle threads could not (stuck in AWS calls after a hard stop)."""
        with self._slots_lock:
            left = list(self._held.values())
            self._held.clear()
        if left:
            try:
                self.inbox.give_back(left)
                self.counts.add("given_back", len(left))
                log.warning("gave back %d messages still held at exit: %s", len(left),
                            ", ".join(m.id for m in left))
            except CloudKonError as exc:
                log.error("could not give back %d messages (they come back after their"
                          " visibility timeout): %s", len(left), exc)

    # --- receiving ------------------------------------------------------------------------

    def _next_message(self) -> Message | None:
        """The next message for this bundle thread to run, or None when the worker stops:
        one handed over by the receiving thread, or, when no thread is receiving, one this
        thread receives itself."""
        handoff = self._handoff
        while True:
            try:
                message = handoff.get_nowait()
            except queue.Empty:
                if self._stopping():
                    return None
                # Under _slots, so that the receiving thread, which passes the receiving on
                # under _slots too, either counts this thread as waiting or has let go.
                with self._slots_lock:
                    leading = self._receiving.acquire(blocking=False)
                    if leading and not handoff.empty():
                        # Handed over since this thread looked (the receiving thread puts
                        # them before it lets go): take one, rather than receive for none.
                        self._receiving.release()
                        continue
                    if not leading:
                        self._followers += 1
                if leading:
                    message = self._receive()
                    if message is None:
                        continue
                    return message
                try:
                    message = handoff.get()
                finally:
                    with self._slots_lock:
                        self._followers -= 1
            if message is _END:
                return None
            if message is not _LEAD:
                return message

    def _receive(self) -> Message | None:
        """As the receiving thread (holding ``_receiving``, which this lets go): long-poll
        for one message per idle thread, keep the first, hand the rest over, and pass the
        receiving on if an idle thread is left waiting. None if the poll brought nothing."""
        cfg = self.config
        messages: list[Message] = []
        try:
            with self._slots_lock:
                # A bundle whose completion is in the background no longer takes a thread.
                free = cfg.threads - len(self._held) + len(self._completing)
            if not self._stopping():
                messages = self.inbox.receive(min(max(free, 1), SQS_MAX_BATCH),
                                              cfg.wait_seconds, cfg.visibility_seconds)
        except CloudKonError as exc:
            if not self._queue_gone(exc):
                log.error("receiving from %s failed: %s; trying again in %.0f s",
                          self.inbox.name, exc, AWS_ERROR_PAUSE_SECONDS)
            self._receiving.release()
            self._draining.wait(AWS_ERROR_PAUSE_SECONDS)
            return None
        except BaseException:
            self._receiving.release()
            raise
        self._gone_since = None
        if messages:
            self.counts.add("received", len(messages))
            if self._stopping():
                # The long poll outlived the stop: nothing of this has started.
                self._give_back(messages, "received after the stop")
                messages = []
        with self._slots_lock:
            for m in messages:
                self._held[m.receipt] = m
            # Handed over before the receiving is let go: a thread that finds no receiving
            # thread finds them (were they put after, it could receive one more, for none).
            for m in messages[1:]:
                self._handoff.put(m)
            if bool(messages) and self._followers > len(messages) - 1:
                self._handoff.put(_LEAD)
            self._receiving.release()
            if self._draining.is_set():  # the shutdown waits for the receiving to end
                self._slots.notify_all()
        return messages[0] if messages else None

    def _queue_gone(self, exc: CloudKonError) -> bool:
        """True if a receive failed because the input queue does not exist; said once, and
        once it has not existed for QUEUE_GONE_EXIT_SECONDS, the worker stops (exit 2)."""
        if not isinstance(exc, NotSetUpError):
            return False
        now = time.monotonic()
        with self._slots_lock:
            first = self._gone_since is None
            if first:
                self._gone_since = now
            elif now - self._gone_since >= QUEUE_GONE_EXIT_SECONDS and self._gone is None:
                self._gone = exc
                self.stop(hard=True)
        if first:
            log.warning("%s; exiting in %.0f s unless it comes back", exc,
                        QUEUE_GONE_EXIT_SECONDS)
        return True

    def _give_back(self, messages: list[Message], why: str) -> None:
        try:
            self.inbox.give_back(messages)
        except CloudKonError as exc:
            log.error("could not give back messages %s (%s): they come back after their"
                      " visibility timeout", ", ".join(m.id for m in messages), exc)
            return
        self.counts.add("given_back", len(messages))
        for m in messages:
            log.info("gave back message %s (%s)", m.id, why, extra={"message_id": m.id})

    # --- bundles --------------------------------------------------------------------------

    def _work_loop(self) -> None:
        behind: Future | None = None  # this thread's last completion, if in the background
        try:
            while True:
                message = self._next_message()
                if message is None:
                    return
                completion = None
                try:
                    completion = self._settle(message, functools.partial(self._handle, message))
                    if completion is not None and self._completer is None:  # in this thread
                        self._settle(message, completion)
                        completion = None
                finally:
                    if completion is None:
                        self._let_go(message)
                if completion is not None:
                    # The completion's calls overlap the next bundle's receive, claim and
                    # run; one at a time per thread, so that they never pile up.
                    if behind is not None:
                        previous, behind = behind, None
                        try:
                            previous.result()
                        except BaseException:
                            # Ended by what ended the completion before (its own message
                            # was let go): this one, not completed, comes back after its
                            # visibility timeout, and is not held for good.
                            self._let_go(message)
                            raise
                    behind = self._complete_behind(message, completion)
        finally:
            if behind is not None:
                behind.result()

    def _complete_behind(self, message: Message, completion: _Completion) -> Future | None:
        """Run ``completion`` on the completer's pool; in this thread if the pool has shut
        down (the worker stopped while this bundle ran)."""
        def complete() -> None:
            try:
                self._settle(message, completion)
            finally:
                self._let_go(message)

        with self._slots_lock:
            self._completing.add(message.receipt)
        try:
            return self._completer.submit(complete)
        except RuntimeError:  # cannot schedule new futures after shutdown
            complete()
            return None

    def _settle(self, message: Message, step: Callable[[], _Completion | None]
                ) -> _Completion | None:
        """``step()`` (a bundle's handling, or its completion); an error ends the step, not
        the thread, and the message comes back after its visibility timeout."""
        try:
            return step()
        except CloudKonError as exc:
            self.counts.add("failed")
            log.error("message %s: %s; it comes back after its visibility timeout",
                      message.id, exc, extra={"message_id": message.id})
        except Exception:  # a bug must not kill the thread
            self.counts.add("failed")
            log.exception("message %s: unexpected error; it comes back after its"
                          " visibility timeout", message.id, extra={"message_id": message.id})
        return None

    def _let_go(self, message: Message) -> None:
        """The worker is done with ``message``: its slot is free, a shutdown may go on."""
        if self._rewatched:
            with self._observed_lock:
                self._rewatched.discard(message.receipt)
        with self._slots_lock:
            self._held.pop(message.receipt, None)
            self._completing.discard(message.receipt)
            if self._draining.is_set():  # only the shutdown waits for this
                self._slots.notify_all()

    def _handle(self, message: Message) -> _Completion | None:
        """Decode, claim and run the bundle of ``message``; return what completes it (store
        the results, send them, delete the message), or None when nothing is left to do."""
        try:
            bundle, reply_to = self.codec.decode_bundle(message.body)
        except CodecError as exc:
            self.inbox.dead_letter(message, str(exc))
            self.counts.add("dead_lettered")
            what = ("refused" if isinstance(exc, SignatureError)
                    else "is not a task bundle")
            log.warning("message %s %s (%s): moved to the dead-letter queue", message.id,
                        what, exc, extra={"message_id": message.id})
            return
        ids = _ids(bundle, message)
        key = bundle_key(bundle.job_id, bundle.seq, bundle.attempt)
        if self._stopping():
            self._give_back([message], f"bundle {key}, not started before the stop")
            return
        if self._job_cancelled(bundle.job_id):
            self.inbox.delete(message)
            self.counts.add("cancelled")
            log.info("bundle %s (message %s): job %s is cancelled; deleted without running",
                     key, message.id, bundle.job_id, extra=ids)
            return
        owner = f"{self._owner_prefix}{next(self._claims)}"  # this claim's fencing token
        sent = time.monotonic()
        claim = self.leases.claim(key, owner, self.lease_seconds, self._takeover_version(key))
        if claim.outcome == BUSY:
            self._leave(message, key, claim, ids)
            return
        if self._observed:
            with self._observed_lock:
                self._observed.pop(key, None)
        if claim.outcome == COMPLETED:
            self._replay(message, bundle, reply_to, claim.results, claim.owner, ids)
            return
        done = self._taken_over(claim.results, bundle, key, ids) if claim.results else []
        claimed = time.monotonic()
        running = _Running(message, bundle, key, owner, done, len(done),
                           claimed + self.config.heartbeat_seconds, claimed, claimed,
                           sent + self._lease_held_seconds)
        takeover = (f", claim {claim.attempt}: taking over with {len(done)} tasks done"
                    if claim.attempt > 1 else "")
        log.info("claimed bundle %s (message %s, %d tasks%s)", key, message.id,
                 len(bundle.tasks), takeover, extra=ids)
        with self._slots_lock:
            self._running[message.receipt] = running
        try:
            self._execute(running)
        finally:
            with running.lock:
                running.finished = True
                beating = running.beating
            if beating:
                self._await_beat(running)
            with self._slots_lock:
                self._running.pop(message.receipt, None)
        if running.expired or (not running.lost and time.monotonic() >= running.expires):
            self._give_up(running, ids)
            return
        if running.cancelled:
            self._end_cancelled(running, reply_to, ids)
            return
        if running.lost:
            self.counts.add("lost")
            log.warning("bundle %s: lease lost to another worker; its %d results here are"
                        " dropped, the new owner completes it", key, len(running.results),
                        extra=ids)
            return
        if len(running.results) < len(bundle.tasks):
            packed, _ = self.codec.pack_results(running.results, self.leases.max_results_bytes,
                                                key)
            self.leases.release(key, owner, packed)
            self.inbox.give_back([message])
            self.counts.add("given_back")
            log.info("gave back bundle %s (message %s): %d of %d tasks done, the rest runs"
                     " elsewhere", key, message.id, len(running.results), len(bundle.tasks),
                     extra=ids)
            return
        return functools.partial(self._complete, running, reply_to, ids)

    def _execute(self, running: _Running) -> None:
        """Run the bundle's tasks that have no result yet, until done or told to stop."""
        bundle, results = running.bundle, running.results
        tasks = bundle.tasks
        if results:  # taken over: what an earlier owner finished is not run again
            done = {r[0] for r in results}
            tasks = [t for t in tasks if t[0] not in done]
        before = len(results)
        self.executor.run_bundle(bundle.job_id, tasks, results,
                                 lambda: running.lost or running.cancelled or self._stopping(),
                                 running.handle)
        self.counts.add("tasks", len(results) - before)

    def _end_cancelled(self, running: _Running, reply_to: str, ids: dict) -> None:
        """A bundle of a cancelled job stopped: it is done, with the tasks that finished as
        its results (completed and sent), and nothing given back."""
        self.counts.add("cancelled")
        log.info("bundle %s: job %s is cancelled: %d of %d tasks ran, the rest will not",
                 running.key, running.bundle.job_id, len(running.results),
                 len(running.bundle.tasks), extra=ids)
        if running.results:
            self._complete(running, reply_to, ids)
            return
        self.leases.release(running.key, running.owner)
        self.inbox.delete(running.message)

    def _job_cancelled(self, job_id: str) -> bool:
        """Whether the job is cancelled, as last read within the cache time (a cancel is
        for good: once seen, never read again)."""
        now = time.monotonic()
        with self._job_states_lock:
            entry = self._job_states.get(job_id)
        if entry is not None and (entry[0] or now - entry[1] < self._job_state_seconds):
            return entry[0]
        cancelled = self.leases.job_state(job_id) == JOB_CANCELLED
        with self._job_states_lock:
            if len(self._job_states) >= _JOB_STATES_KEPT:
                self._job_states.clear()
            self._job_states[job_id] = (cancelled, now)
        return cancelled

    def _complete(self, running: _Running, reply_to: str, ids: dict) -> None:
        bundle, key = running.bundle, running.key
        if not running.lost and time.monotonic() >= running.expires:
            # Completed behind, after its thread waited for the completion before (a slow
            # call): no beat kept its lease meanwhile, and by this worker's clock it is gone.
            self._give_up(running, ids)
            return
        try:
            packed, results = self.codec.pack_results(running.results,
                                                      self.leases.max_results_bytes, key)
        except CodecError as exc:
            self.leases.release(running.key, running.owner)
            self.inbox.dead_letter(running.message, f"results do not fit: {exc}")
            self.counts.add("dead_lettered")
            log.error("bundle %s: %s; moved to the dead-letter queue", key, exc, extra=ids)
            return
        if results is not running.results:
            log.warning("bundle %s: output tails cut to %d characters so that the results fit"
                        " the lease store", key, max(max(len(r[7]), len(r[8])) for r in results),
                        extra=ids)
        if not self.leases.complete(key, running.owner, packed, bundle.sent_at):
            self.counts.add("lost")
            log.warning("bundle %s: lease lost to another worker before completion; results"
                        " dropped", key, extra=ids)
            return
        self._send(bundle, results, reply_to, self.config.worker_id)
        self._deletes.add(running.message)  # after COMPLETED and the send: in a batch soon
        self.counts.add("completed")
        if self.metrics is not None:
            ran = time.monotonic() - running.claimed_at
            waited = time.time() - ran - bundle.sent_at if bundle.sent_at else None
            self.metrics.completed(bundle, results, ran, waited)
        if not log.isEnabledFor(logging.INFO):
            return
        failed = sum(1 for r in results if r[2] != SUCCEEDED)
        log.info("completed bundle %s (message %s): %d tasks, %d not succeeded", key,
                 running.message.id, len(results), failed, extra=ids)

    def _replay(self, message: Message, bundle: Bundle, reply_to: str, stored: bytes | None,
                owner: str, ids: dict) -> None:
        key = bundle_key(bundle.job_id, bundle.seq, bundle.attempt)
        if stored is None:
            raise CodecError(f"bundle {key} is COMPLETED but has no stored results")
        try:
            results = self.codec.unpack_results(stored, bundle.tasks, key)
        except SignatureError as exc:
            # Neither replayed (they may be anyone's) nor run (it may have run): an operator
            # decides, with the reason in the dead-letter queue.
            self.inbox.dead_letter(message, f"not replayed: {exc}")
            self.counts.add("dead_lettered")
            log.error("bundle %s (message %s) is COMPLETED but %s: not replayed, not run;"
                      " moved to the dead-letter queue", key, message.id, exc, extra=ids)
            return
        self._send(bundle, results, reply_to, owner.split("/", 1)[0])
        self._deletes.add(message)
        self.counts.add("replayed")
        if self.metrics is not None:
            self.metrics.replayed(bundle)
        log.info("replayed bundle %s (message %s): completed earlier by %s; %d stored results"
                 " sent again, nothing run", key, message.id, owner, len(results), extra=ids)

    def _taken_over(self, stored: bytes, bundle: Bundle, key: str, ids: dict) -> list[tuple]:
        """The results an earlier owner of the lease stored; none (so every task runs) if
        they fail their signature check: a task may then run twice, none is skipped on the
        word of a forged record."""
        try:
            return self.codec.unpack_results(stored, bundle.tasks, key)
        except SignatureError as exc:
            log.error("bundle %s: %s; ignored, all %d tasks run", key, exc, len(bundle.tasks),
                      extra=ids)
            return []

    def _takeover_version(self, key: str) -> str:
        """The record version of ``key`` this worker has watched unchanged for the holder's
        lease duration (by its own clock), so that a claim may take it over; else ""."""
        if not self._observed:  # the hot path: no lease watched
            return ""
        with self._observed_lock:
            seen = self._observed.get(key)
        if seen is None or self.clock() - seen[1] < seen[2]:
            return ""
        return seen[0]

    def _leave(self, message: Message, key: str, claim: Claim, ids: dict) -> None:
        """Another owner holds the lease: watch its record version, and leave the message
        (it comes back) until a lease's duration after the version was first seen here,
        later each time it comes back while busy. A version still unchanged then is a dead
        holder's: the next claim takes it over."""
        now = self.clock()
        duration = claim.lease_seconds or self.lease_seconds
        with self._observed_lock:
            seen = self._observed.get(key)
            if seen is None or seen[0] != claim.rvn:
                if len(self._observed) >= LEASE_OBSERVATIONS_KEPT:
                    self._observed.clear()
                seen = self._observed[key] = (claim.rvn, now, duration)
            # A fresh watch keeps the message here to claim it again when the watch ends
            # (once per receive): were it left to whichever worker receives it next, each
            # would start a watch of its own, and in a fleet a dead holder's bundle would
            # wait round after round, its backoff doubling each time.
            watch = (seen[1] == now and message.receipt not in self._rewatched
                     and len(self._watching) < LEASE_OBSERVATIONS_KEPT)
            if watch:
                self._watching[message.receipt] = (message, seen[1] + seen[2])
            self._rewatched.discard(message.receipt)
        remaining = max(seen[1] + seen[2] - now, 0.0)
        # The first busy receive is usually the one after the holder's own: no backoff yet.
        doublings = min(max(message.receive_count - 2, 0), 16)
        backoff = self.config.visibility_seconds * (2 ** doublings - 1)
        margin = WATCH_RETRY_MARGIN_SECONDS if watch else 0
        delay = min(math.ceil(remaining) + 1 + margin + backoff, SQS_MAX_VISIBILITY_SECONDS)
        if not self.inbox.extend(message, delay):
            with self._observed_lock:
                self._watching.pop(message.receipt, None)  # no longer ours to claim again
        self.counts.add("busy")
        log.info("bundle %s (message %s) is held by %s (version %s, watched for %.0f s of"
                 " %.0f): left alone, back in %d s", key, message.id, claim.owner, claim.rvn,
                 now - seen[1], seen[2], delay, extra=ids)

    def _send(self, bundle: Bundle, results: list[tuple], reply_to: str, worker: str) -> None:
        bodies = self.codec.results_bodies(ResultBundle(bundle.job_id, bundle.seq, results,
                                                        bundle.sent_at, worker,
                                                        attempt=bundle.attempt))
        outbox = self._outboxes.get(reply_to)
        if outbox is None:  # looked up once: an SQS queue's URL costs a request
            outbox = self._outboxes[reply_to] = self.broker.queue(reply_to)
        outbox.send_batch(bodies)

    # --- heartbeat ------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Every tick: end the bundles whose lease ran out without a beat landing, and hand
        each bundle whose beat is due (and not in flight) to the beat pool; also each
        bundle with finished tasks whose results were last stored RESULTS_STORE_SECONDS
        ago or more, for a store (the lease's write alone, which carries them)."""
        tick = min(1.0, self.config.heartbeat_seconds / 4, RESULTS_STORE_SECONDS / 4)
        while not self._halt.wait(tick):
            if self._watching:
                self._claim_watched_again()
            now = time.monotonic()
            with self._slots_lock:
                running = list(self._running.values())
            for r in running:
                expire = due = False
                store_only = False
                with r.lock:
                    if r.finished or r.lost or r.expired:
                        continue
                    if now >= r.expires:
                        r.expired = expire = True
                    elif r.beating:
                        pass
                    elif r.next_beat <= now:
                        r.beating = due = True
                    elif (len(r.results) > r.stored
                          and now >= r.stored_at + RESULTS_STORE_SECONDS):
                        r.beating = due = store_only = True
                if expire:
                    self.executor.end(r.handle)
                    log.error("bundle %s: no heartbeat landed within its lease (%.0f s):"
                              " ending its running task and giving the lease up", r.key,
                              self.lease_seconds, extra=_ids(r.bundle, r.message))
                elif due:
                    try:
                        self._beats.submit(self._beat, r, store_only)
                    except RuntimeError:  # the pool is shut down: the worker is stopping
                        with r.lock:
                            r.beating = False
                        return

    def _claim_watched_again(self) -> None:
        """Hand each message whose lease watch has ended to the beat pool, to be claimed
        again here (:meth:`_leave`)."""
        now = self.clock()
        with self._observed_lock:
            due = [m for m, end in self._watching.values() if now >= end]
            for m in due:
                del self._watching[m.receipt]
        for m in due:
            try:
                self._beats.submit(self._hand_over_watched, m)
            except RuntimeError:  # the pool is shut down: it comes back by its visibility
                return

    def _hand_over_watched(self, message: Message) -> None:
        """Hold ``message`` for a visibility timeout again and hand it to a bundle thread,
        which claims it (a takeover, if the watched version is unchanged); a message no
        longer held (received elsewhere) is left to its new receiver."""
        if self._stopping():
            return
        try:
            held = self.inbox.extend(message, self.config.visibility_seconds)
        except CloudKonError as exc:
            log.warning("message %s: could not hold it again to claim it (%s); it comes back"
                        " by itself", message.id, exc, extra={"message_id": message.id})
            return
        if not held:
            return
        with self._slots_lock:
            if self._draining.is_set():
                return
            self._held[message.receipt] = message
        with self._observed_lock:
            self._rewatched.add(message.receipt)
        self._handoff.put(message)

    def _await_beat(self, running: _Running) -> None:
        """Wait for the beat in flight of a finished bundle to end, so that no beat lands
        after its completion or release; a beat stuck past the lease is not waited for
        longer (the bundle then counts as expired)."""
        with self._beat_done:
            while running.beating:
                left = running.expires - time.monotonic()
                if left <= 0:
                    return
                self._beat_done.wait(min(left, _TICK))

    def _beat(self, running: _Running, store_only: bool = False) -> None:
        """One beat, on the beat pool: snapshot under the lock, call without it, apply the
        outcome under it. A bundle finished meanwhile ignores the outcome (and its thread
        waits for the beat before completing or releasing). ``store_only``: the lease's
        write alone, to store new results (the message's visibility is the beat's)."""
        try:
            self._beat_once(running, store_only)
        except CloudKonError as exc:
            with running.lock:
                running.next_beat = time.monotonic() + min(AWS_ERROR_PAUSE_SECONDS,
                                                           self.config.heartbeat_seconds / 4)
            log.error("heartbeat of bundle %s failed: %s", running.key, exc,
                      extra=_ids(running.bundle, running.message))
        except Exception:  # a bug must not end the heartbeats
            with running.lock:
                running.next_beat = time.monotonic() + self.config.heartbeat_seconds
            log.exception("heartbeat of bundle %s failed", running.key)
        finally:
            with running.lock:
                running.beating = False
            with self._beat_done:
                self._beat_done.notify_all()

    def _beat_once(self, running: _Running, store_only: bool = False) -> None:
        """Extend the message's visibility (unless ``store_only``) and the lease; store new
        results."""
        cfg = self.config
        with running.lock:
            if running.finished or running.lost or running.expired:
                return
            finished = running.results[:]  # the bundle thread appends as tasks finish
            stored = running.stored
        packed = None
        if len(finished) > stored:
            packed, _ = self.codec.pack_results(finished, self.leases.max_results_bytes,
                                                running.key)
        sent = time.monotonic()
        held = store_only or self.inbox.extend(running.message, cfg.visibility_seconds)
        kept = self.leases.heartbeat(running.key, running.owner, self.lease_seconds, packed)
        with running.lock:
            if running.expired:
                return  # landed too late: the bundle is already being given up
            if not kept:
                lost = running.lost = not running.finished
            else:
                lost = False
                running.stored = max(running.stored, len(finished))
                running.stored_at = sent
                running.expires = sent + self._lease_held_seconds
                if not store_only:
                    running.next_beat = time.monotonic() + cfg.heartbeat_seconds
        if lost:
            self.executor.end(running.handle)
            return
        if not kept or store_only:
            return
        if not held:
            log.warning("bundle %s: message %s is no longer held (received again?); the lease"
                        " still is, so the bundle runs on", running.key, running.message.id,
                        extra=_ids(running.bundle, running.message))
        job_id = running.bundle.job_id
        try:
            cancelled = not running.cancelled and self._job_cancelled(job_id)
        except CloudKonError as exc:
            log.warning("bundle %s: could not read the state of job %s (%s); running on",
                        running.key, job_id, exc, extra=_ids(running.bundle, running.message))
            return
        if cancelled:
            running.cancelled = True
            self.executor.cancel_job(job_id)
            log.info("bundle %s: job %s is cancelled: ending its running task", running.key,
                     job_id, extra=_ids(running.bundle, running.message))

    def _give_up(self, running: _Running, ids: dict) -> None:
        """The lease ran out by this worker's clock without a beat landing: the bundle's
        task was ended; give the lease up (storing what finished, if the lease is still
        this owner's) and the message back; nothing is completed or sent."""
        self.counts.add("expired")
        try:
            packed = None
            if len(running.results) > 0:
                packed, _ = self.codec.pack_results(running.results,
                                                    self.leases.max_results_bytes, running.key)
            self.leases.release(running.key, running.owner, packed)
        except CloudKonError as exc:
            log.warning("bundle %s: could not give the lease up (%s); it expires by itself",
                        running.key, exc, extra=ids)
        self._give_back([running.message], f"bundle {running.key}, its lease ran out")
        log.warning("bundle %s: its lease ran out without a heartbeat landing: %d of %d tasks"
                    " done, nothing completed here; the lease is given up", running.key,
                    len(running.results), len(running.bundle.tasks), extra=ids)

    # --- the registry ---------------------------------------------------------------------

    def _register(self) -> None:
        """Renew this worker's record in the registry; a failure is logged and the worker
        serves on (the record shows as stale until a later beat lands)."""
        if self.registry is None:
            return
        cfg = self.config
        with self._slots_lock:
            busy = len(self._running)
        now = time.time()
        record = WorkerRecord(cfg.worker_id, cfg.instance_id, cfg.threads, busy,
                              self.counts["tasks"], __version__, self.started, now,
                              now + WORKER_STALE_BEATS * cfg.heartbeat_seconds)
        try:
            self.registry.beat(record)
        except CloudKonError as exc:
            log.warning("could not renew worker %s's registry record: %s", cfg.worker_id, exc)

    def _unregister(self) -> None:
        if self.registry is None:
            return
        try:
            self.registry.remove(self.config.worker_id)
        except CloudKonError as exc:
            log.warning("could not remove worker %s's registry record (it shows as stale"
                        " until swept): %s", self.config.worker_id, exc)

    # --- logs -----------------------------------------------------------------------------

    def _log_liveness(self, what: str = "alive") -> None:
        c = self.counts.snapshot()
        with self._slots_lock:
            in_flight = len(self._held)
        log.info("%s: %d in flight; received %d, completed %d, replayed %d, failed %d, given"
                 " back %d, dead-lettered %d, busy %d, lost %d, expired %d, cancelled %d; %d"
                 " tasks run", what, in_flight, c["received"], c["completed"], c["replayed"],
                 c["failed"], c["given_back"], c["dead_lettered"], c["busy"], c["lost"],
                 c["expired"], c["cancelled"], c["tasks"],
                 extra={"counts": {**c, "in_flight": in_flight}})


class _Completer:
    """The pool of completions behind (``submit`` and ``shutdown`` as a ThreadPoolExecutor's):
    its threads are daemons, so that a completion stuck in an AWS call after a stop does not
    keep the process from exiting, as a bundle thread stuck there would not (a
    ThreadPoolExecutor's threads are joined at the interpreter's exit)."""

    def __init__(self, threads: int, name: str) -> None:
        self._size = threads
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not self._started:  # all at once, at the first completion
                for i in range(self._size):
                    threading.Thread(target=self._serve, name=f"{self._name}_{i}",
                                     daemon=True).start()
                self._started = self._size
            self._jobs.put((future, fn))
        return future

    def shutdown(self) -> None:
        """Take no more; what was submitted still runs, then the threads end."""
        with self._lock:
            self._closed = True
            for _ in range(self._started):
                self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            del job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 (as a ThreadPoolExecutor: handed on)
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn


def _ids(bundle: Bundle, message: Message) -> dict:
    return {"job_id": bundle.job_id, "bundle": bundle.seq, "message_id": message.id}


def _stop_name(signum: int | None) -> str:
    return signal_name(signum) if signum else "stop"
