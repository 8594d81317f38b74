"""Collecting a job's results from the output queue, the way `cloudkon collect` does.

The output queue is shared by every job of a prefix. The collector long-polls it, keeps the
results of its own job (written, counted, then deleted), and makes the messages of other
jobs visible again at once for their own collectors. Results are deduplicated by task id:
a bundle delivered twice is replayed by the workers, not run again, and its results come
twice. The collector stops when the job's manifest is final and every task has a result,
or at its deadline, or with SplitFailedError when the job's split failed for good or its
progress record has not changed for SPLIT_STALL_SECONDS (manifest.split_failure). When the queue has had nothing of the job for a while, the results of
bundles it has not seen are read back from the lease store, where the workers recorded
them before sending: a previous collector that took them and died loses nothing.

Results too large for a message were spilled by the worker to the workload bucket, and
the message points to them (docs/design.md, "Large results"): the collector reads them
from there (and removes them once written); a pointer to an object that is gone is said in
one warning, and the bundle's results are read back from the lease store instead.

A job retried (`cloudkon retry`) has several attempts: for each task, only the result of
the latest attempt that ran it counts, and an earlier attempt's result of a retried task
is dropped. A job cancelled while collecting (`cloudkon cancel`) ends the collection with
what has arrived. An interrupted collection (Ctrl-C, SIGTERM) ends with what it has too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cloudkon.backends import (
    COMPLETED,
    IN_PROGRESS,
    Claim,
    LeaseStore,
    Message,
    MessageQueue,
    WorkerRegistry,
)
from cloudkon.codec import WireCodec, decode_pointer
from cloudkon.errors import (
    AwsError,
    CloudKonError,
    CodecError,
    JobConflictError,
    JobNotFoundError,
    SignatureError,
    SplitFailedError,
    WorkloadError,
)
from cloudkon.limits import LEASE_SHARE_OF_VISIBILITY, SQS_LONG_POLL_SECONDS, SQS_MAX_BATCH
from cloudkon.model import ResultBundle, bundle_key, task_id
from cloudkon.summary import Summary
from submitter.manifest import REJECTED, Manifest, split_failure

log = logging.getLogger(__name__)

# How long the collector holds a received result: written and deleted well within it.
COLLECT_VISIBILITY_SECONDS = 30
# While the manifest is not final (the workload is still being split), how often it is read.
MANIFEST_POLL_SECONDS = 2.0
# After this long without a result of the job, bundles not yet seen are looked up in the
# lease store; again after the interval while results are still missing, the interval
# doubling (up to the cap) while the lookups find nothing: workers may be down for hours.
RECOVERY_QUIET_SECONDS = float(SQS_LONG_POLL_SECONDS)
RECOVERY_INTERVAL_SECONDS = 60.0
MAX_RECOVERY_INTERVAL_SECONDS = 1800.0
# Another job's message is made visible again at once, for its own collector. One that has
# kept coming back to this collector for this long is likely a job nobody collects (a late
# duplicate): it is then hidden for the delay below each time, so that on a queue that
# returns the oldest messages first (moto; SQS may too) it cannot hide this job's results.
OTHERS_GRACE_SECONDS = 10.0
OTHERS_DELAY_SECONDS = SQS_LONG_POLL_SECONDS
# Without a manifest this long after the collector started, the upload is probably not being
# split (no Lambda deployed, or it fails): said once, then the collector waits on.
SPLIT_WARNING_SECONDS = 20.0
# How many missing task ids a timed-out collection names.
MAX_NAMED_MISSING = 20
# While collecting a split job, how often its record is read again to see a cancel.
JOB_STATE_POLL_SECONDS = 5.0
# After a cancel is seen, how long the collector still takes what is on the queue.
CANCEL_SWEEP_SECONDS = 2
# How many of a bundle's dropped lines (no task of the job) its warning names.
MAX_NAMED_DROPPED = 5
# Results held in memory while the job's split has not ended (which lines are tasks is not
# known yet): about 50 MB. Beyond, this job's messages stay on the queue, hidden a while.
MAX_PENDING_RESULTS = 100_000
PENDING_DELAY_SECONDS = SQS_LONG_POLL_SECONDS


@dataclass
class Collection:
    """How a collection ended."""

    summary: Summary
    manifest: Manifest | None
    complete: bool
    missing_count: int  # tasks without a result; -1 if unknown (manifest not final)
    missing: list[str]  # ids of the first few missing tasks (empty if they cannot be named)
    recovered: int  # results read back from the lease store
    submit_to_last: float | None = None  # seconds from the submit to the last result
    cancelled: bool = False  # the job was cancelled
    interrupted: bool = False  # Ctrl-C or SIGTERM ended the collection
    dropped: int = 0  # results dropped: their line is no task of the job
    stalled: list[str] = field(default_factory=list)  # bundles held by workers gone quiet

    @property
    def split_wait(self) -> float | None:
        """How long the uploaded workload waited before the split started (the Lambda's
        start), left out of the wall time; None for a job not split from an upload."""
        m = self.manifest
        if m is None or not m.split_at or not m.source.startswith("s3://"):
            return None
        return max(m.split_at - m.submitted_at, 0.0)

    def shortfall(self, timeout: float) -> str:
        """What a collection that gave up after ``timeout`` seconds lacks, in one line."""
        if self.missing_count < 0:
            return (f"timed out after {timeout:g} s: job {self.summary.job_id}'s workload is"
                    " not split yet")
        line = (f"timed out after {timeout:g} s: {self.missing_count:,} of"
                f" {self.summary.tasks_read:,} tasks have no result")
        if self.missing:
            line += ": " + ", ".join(self.missing)
            more = self.missing_count - len(self.missing)
            if more > 0:
                line += f" and {more:,} more"
        for held in self.stalled:
            line += f"; {held}"
        return line


class Collector:
    """Collects the results of job ``job_id``: ``run()`` returns a :class:`Collection`."""

    def __init__(self, job_id: str, outbox: MessageQueue, manifests,
                 leases: LeaseStore | None = None,
                 on_results: Callable[[ResultBundle], None] | None = None,
                 on_total: Callable[[int], None] | None = None,
                 exists: Callable[[], bool] | None = None,
                 quiet_seconds: float = RECOVERY_QUIET_SECONDS,
                 already: list[ResultBundle] | None = None,
                 commands: Callable[[set[int]], dict[int, str]] | None = None,
                 digest: str | None = None, codec: WireCodec | None = None,
                 workers: WorkerRegistry | None = None) -> None:
        """``exists`` tells whether the job was submitted though it has no manifest yet (its
        workload uploaded, not split yet); without it, no manifest means no such job.
        After ``quiet_seconds`` without a result of the job, the lease store is read.
        ``already`` holds results an earlier collection wrote (a results file resumed):
        they count, and are not handed on again. ``commands`` gives the commands of lines
        (from the workload), for results read back from the lease store, which lack them.
        ``digest``, if given, is the workload submitted: a job of another one is refused
        (JobConflictError), not collected. ``codec`` reads spilled results (from the
        workload bucket; without, a spilled bundle is read back from the lease store) and
        checks signatures if it has a key: results of the job that fail the check are
        dropped, with a warning, and counted. With ``workers`` (the worker registry), the
        bundles found IN_PROGRESS when the lease store is read are checked against their
        holders' records: those held by a worker that stopped beating are named."""
        self.job_id = job_id
        self.codec = codec or WireCodec()
        self.workers = workers
        self.stalled: list[str] = []  # the last check's bundles held by quiet workers
        self.outbox = outbox
        self.manifests = manifests
        self.leases = leases
        self.on_results = on_results
        self.on_total = on_total
        self.exists = exists
        self.quiet_seconds = quiet_seconds
        self.summary = Summary(job_id, 0)
        self._seen = bytearray()  # _seen[line] == 1 once the task on that line has a result
        self.count = 0  # tasks with a result
        self._seqs: set[tuple[int, int]] = set()  # (attempt, bundle) with a result received
        self._resolved: set[tuple[int, int]] = set()  # read back COMPLETED from the lease store
        self._latest = bytearray()  # line -> the attempt whose result counts (0: the first)
        self._already = already or []
        self.commands = commands
        self._workers: dict[str, int] = {}  # worker id -> its threads (0: not said)
        self._others: dict[str, float] = {}  # message id of another job -> when first seen
        self._last_end = 0.0
        self.recovered = 0
        self.submit_to_last: float | None = None  # from the submit to the last result
        self.digest = digest
        # _tasks[line] == 1 if the line is a task of the job; None until the manifest is
        # final, and results that come before are held in _pending until it is.
        self._tasks: bytearray | None = None
        self._pending: list[ResultBundle] = []
        self._pending_results = 0
        self.dropped = 0
        self._unsigned: set[tuple[int, int]] = set()  # (attempt, bundle) stored unsigned

    def run(self, timeout: float | None = None) -> Collection:
        """Collect until every task has a result, the job is cancelled, ``timeout`` passes
        or the user interrupts (KeyboardInterrupt); return how it ended."""
        self.record = None
        try:
            record = self.manifests.load_record(self.job_id)
            if record is None and not (self.exists is not None and self.exists()):
                raise JobNotFoundError(f"job {self.job_id} does not exist (no manifest, no"
                                       " upload)")
            self.record = record
            self._collect(timeout)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        return self._finish(None if self.record is None else self.record.manifest)

    @classmethod
    def interrupted(cls, job_id: str) -> Collection:
        """The collection of a job interrupted before it could start."""
        summary = Summary(job_id, 0)
        summary.interrupted = True
        return Collection(summary, None, False, -1, [], 0, interrupted=True)

    def _collect(self, timeout: float | None) -> None:
        now = time.monotonic
        deadline = now() + timeout if timeout is not None else float("inf")
        manifest = None if self.record is None else self.record.manifest
        announced = self._announce(manifest)
        started = manifest_read = last_mine = state_read = now()
        last_recovery = None
        if self.record is not None and self.record.retries and self.leases is not None:
            # The earlier attempts' results were most likely collected before the retry:
            # read them back now rather than after a quiet spell on the queue.
            self._recover(manifest)
        recovery_interval = RECOVERY_INTERVAL_SECONDS
        warned = False
        split_seen = (None, now())  # the split's record as last read, and since when
        while True:
            if manifest is not None and self.digest and not manifest.same_workload(self.digest):
                raise JobConflictError(self.job_id, manifest.digest)
            if manifest is not None and (not manifest.final or manifest.status == REJECTED):
                split_seen = self._check_split(split_seen)
            if manifest is not None and manifest.status == REJECTED:
                raise WorkloadError(manifest.source, manifest.error)
            if manifest is not None and manifest.final and self.count >= manifest.tasks:
                break
            if self.record is not None and self.record.cancelled:
                self._sweep_cancelled(manifest)
                break
            remaining = deadline - now()
            if remaining <= 0:
                if manifest is not None and manifest.final and self.leases is not None:
                    self._recover(manifest)  # what the lease store has, and who holds the rest
                break
            # While the manifest is not final, poll short: the results may all be in before
            # it is read again.
            wait = SQS_LONG_POLL_SECONDS if manifest is not None and manifest.final \
                else MANIFEST_POLL_SECONDS
            messages = self.outbox.receive(SQS_MAX_BATCH, min(wait, remaining),
                                           COLLECT_VISIBILITY_SECONDS)
            if self._take(messages):
                last_mine = now()
            elif (manifest is not None and manifest.final and self.leases is not None
                  and now() - last_mine >= self.quiet_seconds
                  and (last_recovery is None or now() - last_recovery >= recovery_interval)):
                found = self._recover(manifest)
                if last_recovery is not None:
                    recovery_interval = (RECOVERY_INTERVAL_SECONDS if found else
                                         min(recovery_interval * 2, MAX_RECOVERY_INTERVAL_SECONDS))
                last_recovery = now()
            if manifest is not None and manifest.final and now() - state_read >= JOB_STATE_POLL_SECONDS:
                state_read = now()
                record = self.manifests.load_record(self.job_id)
                if record is not None and record.cancelled:
                    self.record = record
            if (manifest is None or not manifest.final) and now() - manifest_read >= MANIFEST_POLL_SECONDS:
                self.record = self.manifests.load_record(self.job_id)
                manifest = None if self.record is None else self.record.manifest
                manifest_read = now()
                if not announced:
                    announced = self._announce(manifest)
                if manifest is None and not warned and now() - started >= SPLIT_WARNING_SECONDS:
                    warned = True
                    log.warning("job %s: its upload has not been split after %.0f s; is the"
                                " Lambda deployed (`chalice deploy`)? Its log says why not",
                                self.job_id, now() - started, extra={"job_id": self.job_id})

    def _check_split(self, seen: tuple) -> tuple:
        """Raise SplitFailedError if the job's split failed for good or has stopped making
        progress (its record unchanged for SPLIT_STALL_SECONDS); return what was seen."""
        record = self.record
        mark = (record.split, record.manifest.split_at, record.manifest.status)
        if mark != seen[0]:
            seen = (mark, time.monotonic())
        reason = split_failure(record, time.time(), time.monotonic() - seen[1])
        if reason is not None:
            raise SplitFailedError(f"job {self.job_id}: its split failed: {reason}")
        return seen

    def _sweep_cancelled(self, manifest: Manifest | None) -> None:
        """The job is cancelled: take what is on the queue now and what the lease store
        holds, then stop."""
        self.summary.job_cancelled = True
        log.warning("job %s is cancelled: taking the results that are there, then stopping",
                    self.job_id, extra={"job_id": self.job_id})
        while self._take(self.outbox.receive(SQS_MAX_BATCH, CANCEL_SWEEP_SECONDS,
                                             COLLECT_VISIBILITY_SECONDS)):
            pass
        if manifest is not None and manifest.final and self.leases is not None:
            self._recover(manifest)

    def _announce(self, manifest: Manifest | None) -> bool:
        if manifest is None or not manifest.final:
            return False
        if self.record is not None:
            self._latest = self.record.latest_attempts()
            for refused in self.record.refused:
                log.warning("job %s: an upload under its id was refused: %s: %s", self.job_id,
                            refused.source, refused.reason, extra={"job_id": self.job_id})
        self._tasks = manifest.task_lines()
        for bundle in self._already:
            self._add(bundle, hand_on=False)
        self._already = []
        pending, self._pending, self._pending_results = self._pending, [], 0
        for bundle in pending:
            self._add(bundle)
        self.summary.tasks_read = manifest.tasks
        self.summary.bad_lines = manifest.bad_line_count
        for line, reason in manifest.bad_lines:
            log.warning("%s:%d: %s; line skipped", manifest.source, line, reason,
                        extra={"job_id": self.job_id})
        if manifest.bad_line_count > len(manifest.bad_lines):
            log.warning("%s: %d bad lines in all, %d shown", manifest.source,
                        manifest.bad_line_count, len(manifest.bad_lines))
        if self.on_total is not None and manifest.status != REJECTED:
            self.on_total(manifest.tasks)
        return True

    def _take(self, messages: list[Message]) -> bool:
        """Keep this job's results, give the rest back; True if any results were this job's
        (a message whose spilled results cannot be read is dropped, and does not count)."""
        mine, others, later, held, spilled, unreadable = [], [], [], [], [], []
        now = time.monotonic()
        for message in messages:
            try:
                bundle = decode_pointer(message.body)
            except CodecError as exc:
                log.warning("message %s on queue %s is not a results message (%s); left there",
                            message.id, self.outbox.name, exc, extra={"message_id": message.id})
                later.append(message)
                continue
            if bundle.job_id != self.job_id:
                first_seen = self._others.setdefault(message.id, now)
                (later if now - first_seen >= OTHERS_GRACE_SECONDS else others).append(message)
                continue
            if self.codec.signer is not None and not self._signed(message):
                mine.append(message)  # dropped: deleted with this job's results
                continue
            if self._tasks is None and self._pending_results >= MAX_PENDING_RESULTS:
                held.append(message)  # no room until the split ends: left on the queue
                continue
            if bundle.spilled is not None:
                pointer = bundle.spilled
                try:
                    bundle = self.codec.fetch(bundle)
                except CodecError as exc:
                    self._spill_gone(bundle, exc)
                    unreadable.append(message)  # it never can be: dropped from the queue
                    continue
                spilled.append(pointer)
            self._add(bundle)
            mine.append(message)
        for m in held:
            self.outbox.extend(m, PENDING_DELAY_SECONDS)
        if others:
            self.outbox.give_back(others)
        for m in later:
            self.outbox.extend(m, OTHERS_DELAY_SECONDS)
        if mine or unreadable:  # after their results were written: a crash loses nothing
            self.outbox.delete_batch(mine + unreadable)
        for pointer in spilled:  # after the messages: a crash before leaves no dangling pointer
            self._remove_spilled(pointer)
        return bool(mine)

    def _signed(self, message: Message) -> bool:
        """Whether a results message of this job passes the signature check; if not, it
        is counted and said."""
        try:
            self.codec.verify_results(message.body, self.job_id)
            return True
        except SignatureError as exc:
            self._bad_signature(f"results message {message.id}", exc)
            return False

    def _bad_signature(self, what: str, exc: SignatureError) -> None:
        self.summary.bad_signatures += 1
        log.warning("job %s: %s %s; its results are dropped", self.job_id, what, exc,
                    extra={"job_id": self.job_id})

    def _spill_gone(self, bundle: ResultBundle, exc: CodecError) -> None:
        """A results message whose spilled results cannot be read: said, and the bundle is
        left to the lease store (a pointer does not say which of the bundle's results it
        holds: its other messages may have come in already)."""
        ids = {"job_id": self.job_id, "bundle": bundle.seq}
        log.warning("job %s: bundle %d's results cannot be read: %s; they are read back from"
                    " the lease table instead", self.job_id, bundle.seq, exc, extra=ids)

    def _remove_spilled(self, pointer: dict) -> None:
        spill = self.codec.spill
        if spill is None:
            return
        try:
            spill.delete(pointer)
        except (AwsError, CodecError) as exc:
            log.warning("job %s: could not remove spilled results (the bucket's lifecycle rule"
                        " removes them later): %s", self.job_id, exc,
                        extra={"job_id": self.job_id})

    def _add(self, bundle: ResultBundle, hand_on: bool = True) -> None:
        """Count and hand on the results not seen before, of the attempt that counts, for
        lines that are tasks of the job (others are dropped, with a warning)."""
        tasks = self._tasks
        if tasks is None:  # which lines are tasks is known once the manifest is final
            self._pending.append(bundle)
            self._pending_results += len(bundle.results)
            return
        seen, latest, attempt = self._seen, self._latest, bundle.attempt
        fresh = []
        dropped = []
        for r in bundle.results:
            line = r[0]
            if not 0 < line < len(tasks) or not tasks[line]:
                dropped.append(line)
                continue
            if line < len(latest) and latest[line] > attempt:
                continue  # an earlier attempt's result of a task retried since
            if line >= len(seen):
                seen.extend(bytes(max(line + 1 - len(seen), len(seen))))
            if not seen[line]:
                seen[line] = 1
                fresh.append(r)
        if dropped:
            self.dropped += len(dropped)
            self.summary.dropped_results = self.dropped
            log.warning("job %s: bundle %d (attempt %d, worker %s) holds %d result(s) for lines"
                        " that are no task of the job (%s); dropped", self.job_id, bundle.seq,
                        attempt, bundle.worker or "?", len(dropped),
                        ", ".join(map(str, dropped[:MAX_NAMED_DROPPED]))
                        + (" ..." if len(dropped) > MAX_NAMED_DROPPED else ""),
                        extra={"job_id": self.job_id, "bundle": bundle.seq})
        if hand_on:
            self._seqs.add((attempt, bundle.seq))
        if not fresh:
            log.debug("job %s: bundle %d's results came again; dropped", self.job_id,
                      bundle.seq, extra={"job_id": self.job_id, "bundle": bundle.seq})
            return
        self.count += len(fresh)
        if bundle.worker:
            self._workers[bundle.worker] = max(bundle.threads, self._workers.get(bundle.worker, 0))
        self._last_end = max(self._last_end, max(r[6] for r in fresh))
        fresh_bundle = ResultBundle(bundle.job_id, bundle.seq, fresh, bundle.sent_at, bundle.worker,
                                    bundle.threads, attempt)
        self.summary.add(fresh_bundle)
        if self.on_results is not None and hand_on:
            self.on_results(fresh_bundle)

    def _recover(self, manifest: Manifest) -> int:
        """Read back from the lease store the results of bundles not seen on the queue (when
        every bundle has been seen, of those not read back yet: some of their results are
        missing); return how many results that added."""
        looked = found = 0
        before = self.count
        attempts = (self.record.attempts() if self.record is not None
                    else [(1, manifest.bundles)])
        bundles = [(attempt, seq) for attempt, n in attempts for seq in range(n)]
        unresolved = [b for b in bundles if b not in self._resolved]
        unseen = [b for b in unresolved if b not in self._seqs]
        read = []
        held: dict[str, list[Claim]] = {}  # worker -> the bundles it holds IN_PROGRESS
        for attempt, seq in unseen or unresolved:
            looked += 1
            claim = self.leases.lookup(bundle_key(self.job_id, seq, attempt))
            if claim is not None and claim.outcome == IN_PROGRESS and claim.lease_expires:
                held.setdefault(claim.owner.split("/", 1)[0], []).append(claim)
            if claim is None or claim.outcome != COMPLETED or not claim.results:
                continue
            key = bundle_key(self.job_id, seq, attempt)
            try:
                results = self.codec.unpack_results(claim.results, None, key)
            except SignatureError as exc:
                if (attempt, seq) not in self._unsigned:
                    self._unsigned.add((attempt, seq))
                    self._bad_signature(f"bundle {key}:", exc)
                continue
            except CodecError as exc:
                log.warning("job %s: bundle %d's stored results do not unpack: %s", self.job_id,
                            seq, exc, extra={"job_id": self.job_id, "bundle": seq})
                continue
            self._resolved.add((attempt, seq))
            found += 1
            # The bundle's sent_at as the worker stored it, so that a second collect keeps
            # the latencies of the first; from the submit where a worker stored none.
            read.append(ResultBundle(self.job_id, seq, results,
                                     claim.sent_at or manifest.submitted_at,
                                     claim.owner.split("/", 1)[0], attempt=attempt))
        if read and self.commands is not None:
            self._fill_commands(read)
        for bundle in read:
            self._add(bundle)
        self.recovered += self.count - before
        log.info("job %s: looked up %d bundles in the lease store, %d completed, %d results"
                 " read back", self.job_id, looked, found, self.count - before,
                 extra={"job_id": self.job_id})
        self._check_holders(held)
        return self.count - before

    def _check_holders(self, held: dict[str, list[Claim]]) -> None:
        """Name the bundles held by workers whose registry record is stale or gone (one
        GetItem per holder), and when a takeover may come."""
        self.stalled = []
        if self.workers is None:
            return
        for worker, claims in sorted(held.items()):
            try:
                record = self.workers.record(worker)
            except CloudKonError as exc:
                log.warning("job %s: the registry record of worker %s could not be read: %s",
                            self.job_id, worker, exc, extra={"job_id": self.job_id})
                continue
            now = time.time()
            if record is not None and not record.stale(now):
                continue
            lease = max(c.lease_seconds for c in claims) or 0.0
            if record is None:
                quiet = "which has no record in the worker registry (gone)"
                since = now - lease  # not known: as if its lease had just run out
            else:
                quiet = f"which stopped beating {now - record.last_beat:.0f} s ago"
                since = record.last_beat
            # Its message comes back a visibility timeout after its last beat, and a
            # receiver takes the lease over after watching it unchanged for a lease.
            eta = since + lease / LEASE_SHARE_OF_VISIBILITY + lease + 1 - now
            when = f"within ~{_minutes(eta)}" if eta > 0 else "any moment now"
            n = len(claims)
            text = (f"{n} bundle{'s' if n > 1 else ''} held by worker {worker}, {quiet};"
                    f" {'they' if n > 1 else 'it'} will be taken over {when}")
            self.stalled.append(text)
            log.warning("job %s: waiting for %s", self.job_id, text,
                        extra={"job_id": self.job_id})

    def _fill_commands(self, bundles: list[ResultBundle]) -> None:
        """Give results read back from the lease store their commands, from the workload."""
        lines = {r[0] for b in bundles for r in b.results}
        try:
            commands = self.commands(lines)
        except CloudKonError as exc:
            log.warning("job %s: the commands of results read back from the lease table stay"
                        " empty: %s", self.job_id, exc, extra={"job_id": self.job_id})
            return
        for b in bundles:
            b.results = [(r[0], commands.get(r[0], r[1])) + tuple(r[2:]) for r in b.results]

    def _finish(self, manifest: Manifest | None) -> Collection:
        s = self.summary
        s.workers = len(self._workers)
        if all(self._workers.values()):  # every worker said how many threads it has
            s.threads = sum(self._workers.values())
        cancelled = s.job_cancelled
        interrupted = s.interrupted
        if manifest is not None and self._last_end:
            # From the split's start: how long the upload waited for the Lambda is apart.
            s.wall_seconds = max(self._last_end - (manifest.split_at or manifest.submitted_at),
                                 0.0)
            self.submit_to_last = max(self._last_end - manifest.submitted_at, 0.0)
        if manifest is None or not manifest.final:
            s.incomplete = not interrupted
            if self._pending:
                log.warning("job %s: %d results came before its split ended and are not kept;"
                            " `cloudkon collect %s` reads them back from the lease table",
                            self.job_id, sum(len(b.results) for b in self._pending),
                            self.job_id, extra={"job_id": self.job_id})
            return Collection(s, manifest, False, -1, [], self.recovered, self.submit_to_last,
                              cancelled, interrupted, self.dropped)
        missing_count = max(manifest.tasks - self.count, 0)
        named = []
        if missing_count and manifest.skipped is not None:
            for line in self._missing_lines(manifest):
                named.append(task_id(self.job_id, line))
                if len(named) >= MAX_NAMED_MISSING:
                    break
        s.incomplete = missing_count > 0 and not interrupted and not cancelled
        return Collection(s, manifest, missing_count == 0, missing_count, named, self.recovered,
                          self.submit_to_last, cancelled, interrupted, self.dropped,
                          self.stalled if missing_count else [])

    def _missing_lines(self, manifest: Manifest) -> Iterator[int]:
        skipped = iter(manifest.skipped or ())
        gap = next(skipped, None)
        seen = self._seen
        for line in range(1, manifest.last_line + 1):
            while gap is not None and line > gap[1]:
                gap = next(skipped, None)
            if gap is not None and gap[0] <= line <= gap[1]:
                continue
            if line >= len(seen) or not seen[line]:
                yield line


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
