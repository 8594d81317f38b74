"""Operating jobs: their progress, read from the lease table (`cloudkon status`, `cloudkon
jobs`), cancelling one (`cloudkon cancel`), and running its failed tasks again as a new
attempt (`cloudkon retry`).

Reading consumes nothing and writes nothing. A job's progress comes from its record (the
manifest, which says how many bundles each attempt has) and its bundles' leases, read by
key: one BatchGetItem per 100 bundles, never a scan. A :class:`ProgressReader` that is
asked again (``status --watch``) keeps the leases it found COMPLETED, which never change,
and reads only the others. Listing jobs is one Scan of the table filtered to job records.

A bundle's tasks run one after another on one worker thread, so a live lease is one
running task: that is how ``running`` is counted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from cloudkon.backends import COMPLETED, IN_PROGRESS, WorkerRecord
from cloudkon.codec import WireCodec
from cloudkon.errors import CodecError, JobNotFoundError, UsageError
from cloudkon.limits import DEFAULT_REMOTE_BUNDLE_SIZE, DEFAULT_REMOTE_BUNDLE_MS, MAX_JOB_ATTEMPTS
from cloudkon.model import FAILED, SUCCEEDED, TIMED_OUT, bundle_key
from cloudkon.workload import Workload
from submitter.manifest import (
    MAX_RETRY_RUNS,
    REJECTED,
    SUBMITTING,
    JobRecord,
    Retry,
    split_failure,
)
from submitter.split import split

log = logging.getLogger(__name__)

SPLITTING = "splitting"
RUNNING = "running"
DONE = "done"
CANCELLED = "cancelled"
FAILED_SPLIT = "failed split"

# The rate of a running job counts the tasks that ended within this window.
RATE_WINDOW_SECONDS = 60.0
# How often `status --watch` reads the job again.
WATCH_SECONDS = 2.0


@dataclass
class Progress:
    """Where a job stands, as its record and its leases tell."""

    job_id: str
    state: str  # splitting, running, done, cancelled, failed split
    submitted_at: float
    source: str
    tasks: int = 0  # 0 while splitting
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    running: int = 0
    waiting: int = 0
    workers: list[str] = field(default_factory=list)  # holding a live lease of the job
    rate: float | None = None  # tasks per second
    eta_seconds: float | None = None
    attempts: int = 1
    bad_lines: int = 0
    error: str = ""  # why the split failed
    refused: list[str] = field(default_factory=list)  # uploads under its id refused, and why
    split: str = ""  # while splitting: how far the split got

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.timed_out

    @property
    def healthy(self) -> bool:
        """False once something went wrong: a task failed or timed out, the job was
        cancelled, or its workload could not be split."""
        return (self.state not in (CANCELLED, FAILED_SPLIT)
                and not self.failed and not self.timed_out)

    @property
    def finished(self) -> bool:
        return self.state in (DONE, CANCELLED, FAILED_SPLIT)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["done"] = self.done
        d["healthy"] = self.healthy
        for name in ("rate", "eta_seconds"):
            if d[name] is not None:
                d[name] = round(d[name], 3)
        return d

    def line(self) -> str:
        """One line, for a listing or a redraw in place."""
        if self.state in (SPLITTING, FAILED_SPLIT):
            return f"{self.job_id}  {self.state}" + (f": {self.error}" if self.error else "")
        percent = f"{100 * self.done / self.tasks:5.1f}%" if self.tasks else "    -"
        text = (f"{self.job_id}  {self.state:<9} {self.done:,}/{self.tasks:,} {percent}"
                f"  failed {self.failed:,}  timed out {self.timed_out:,}"
                f"  running {self.running:,}  waiting {self.waiting:,}")
        if self.state == RUNNING:
            text += f"  {_rate(self.rate)}  ETA {_duration(self.eta_seconds)}"
        return text

    def to_text(self) -> str:
        lines = [f"job {self.job_id}: {self.state}"
                 + (f" (attempt {self.attempts})" if self.attempts > 1 else "")]
        lines.append(f"  submitted  {when_text(self.submitted_at)}   from {self.source}")
        lines += [f"  refused    {refused}" for refused in self.refused]
        if self.state == FAILED_SPLIT:
            lines.append(f"  error      {self.error}")
            return "\n".join(lines)
        if self.state == SPLITTING:
            lines.append("  tasks      not known yet: the workload is being split"
                         + (f" ({self.split})" if self.split else ""))
            return "\n".join(lines)
        lines.append(f"  tasks      {self.tasks:>10,}   done {self.done:,}  succeeded"
                     f" {self.succeeded:,}  failed {self.failed:,}  timed out {self.timed_out:,}")
        not_run = "not run" if self.state == CANCELLED else "waiting"
        lines.append(f"  {'':<10} {'':>10}   running {self.running:,}  {not_run}"
                     f" {self.waiting:,}" + (f"  bad lines {self.bad_lines:,}"
                                             if self.bad_lines else ""))
        if self.state == RUNNING:
            lines.append(f"  rate       {_rate(self.rate)}   ETA {_duration(self.eta_seconds)}")
        elif self.rate:
            lines.append(f"  rate       {_rate(self.rate)}")
        workers = ", ".join(self.workers) if self.workers else "none"
        lines.append(f"  workers    {len(self.workers)} on it: {workers}")
        return "\n".join(lines)


def _rate(rate: float | None) -> str:
    return "rate -" if rate is None else f"{rate:,.1f} tasks/s"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def when_text(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


class ProgressReader:
    """Reads one job's progress; ask again with :meth:`read` (only what can still change
    is read again). ``exists`` says whether a job without a record was uploaded (its
    workload not split yet); without it, no record means no such job."""

    def __init__(self, job_id: str, manifests, leases, exists: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.time, codec: WireCodec | None = None) -> None:
        """``codec`` follows pointers to results spilled to the workload bucket."""
        self.job_id = job_id
        self.codec = codec or WireCodec()
        self.manifests = manifests
        self.leases = leases
        self.exists = exists
        self.clock = clock
        self.record: JobRecord | None = None
        self.statuses: dict[int, str] = {}  # line -> the latest attempt's status
        self._completed: dict[str, list[tuple[int, str, float]]] = {}  # key -> results

    def read(self) -> Progress:
        record = self.record = self.manifests.load_record(self.job_id)
        now = self.clock()
        if record is None:
            if self.exists is not None and self.exists():
                return Progress(self.job_id, SPLITTING, 0.0, "(uploaded)")
            raise JobNotFoundError(f"job {self.job_id} does not exist (no manifest, no upload)")
        m = record.manifest
        progress = Progress(self.job_id, RUNNING, m.submitted_at, m.source, attempts=1 + len(
            record.retries), bad_lines=m.bad_line_count, error=m.error)
        progress.refused = [f"{r.source}: {r.reason}" for r in record.refused]
        failure = split_failure(record, now)
        if failure is not None:
            progress.state = FAILED_SPLIT
            progress.error = f"the split failed: {failure}"
            return progress
        if m.status == REJECTED:
            progress.state = FAILED_SPLIT
            return progress
        if m.status == SUBMITTING:
            progress.state = CANCELLED if record.cancelled else SPLITTING
            if record.split is not None and record.split.bundles:
                p = record.split
                progress.split = (f"{p.tasks:,} tasks in {p.bundles:,} bundles sent so far,"
                                  f" to line {p.line:,}")
            return progress
        progress.tasks = m.tasks
        latest = record.latest_attempts()
        tasks = m.task_lines()
        statuses: dict[int, str] = {}
        ends: list[float] = []
        workers: set[str] = set()
        for attempt, bundles in record.attempts():
            keys = [bundle_key(self.job_id, seq, attempt) for seq in range(bundles)]
            unread = [k for k in keys if k not in self._completed]
            known = [k for k in keys if k in self._completed]
            for key in known:
                self._count(self._completed[key], attempt, latest, statuses, ends, tasks)
            for key, claim in self.leases.lookup_many(unread).items():
                results = self._results(key, claim)
                if claim.outcome == COMPLETED:
                    self._completed[key] = results
                elif claim.outcome == IN_PROGRESS and claim.lease_expires >= now:
                    progress.running += 1
                    workers.add(claim.owner.split("/", 1)[0])
                self._count(results, attempt, latest, statuses, ends, tasks)
        self.statuses = statuses
        for status in statuses.values():
            if status == SUCCEEDED:
                progress.succeeded += 1
            elif status == FAILED:
                progress.failed += 1
            elif status == TIMED_OUT:
                progress.timed_out += 1
        progress.workers = sorted(workers)
        progress.waiting = max(m.tasks - progress.done - progress.running, 0)
        if record.cancelled:
            progress.state = CANCELLED
        elif progress.done >= m.tasks:
            progress.state = DONE
            progress.running = 0
        if ends:
            if progress.state == RUNNING:
                span = min(RATE_WINDOW_SECONDS, max(now - m.submitted_at, 1e-3))
                recent = sum(1 for e in ends if e >= now - span)
                progress.rate = recent / span
                if progress.rate:
                    progress.eta_seconds = (m.tasks - progress.done) / progress.rate
            else:
                progress.rate = len(ends) / max(max(ends) - m.submitted_at, 1e-3)
        return progress

    def _results(self, key: str, claim) -> list[tuple[int, str, float]]:
        if not claim.results:
            return []
        try:
            stored = self.codec.unpack_results(claim.results, None, key)
            return [(r[0], r[2], r[6]) for r in stored]
        except CodecError as exc:
            log.warning("job %s: the stored results of %s do not unpack: %s", self.job_id, key,
                        exc, extra={"job_id": self.job_id})
            return []

    @staticmethod
    def _count(results, attempt: int, latest: bytearray, statuses: dict, ends: list,
               tasks: bytearray) -> None:
        for line, status, end in results:
            if not 0 < line < len(tasks) or not tasks[line]:
                continue  # no task of the job: never counted
            if max(latest[line] if line < len(latest) else 0, 1) == attempt:
                statuses[line] = status
                ends.append(end)


def watch(reader: ProgressReader, on_progress: Callable[[Progress], None],
          interval: float = WATCH_SECONDS) -> Progress:
    """Read the job every ``interval`` seconds, handing each reading to ``on_progress``,
    until it is finished; return the last reading."""
    while True:
        progress = reader.read()
        on_progress(progress)
        if progress.finished:
            return progress
        time.sleep(interval)


def list_jobs(manifests, leases, limit: int | None = None) -> list[Progress]:
    """The progress of the last ``limit`` jobs submitted (all if None), oldest first."""
    records = manifests.records()
    if limit is not None:
        records = records[-limit:] if limit else []
    progress = []
    for record in records:
        reader = ProgressReader(record.job_id, manifests, leases)
        progress.append(reader.read())
    return progress


@dataclass(frozen=True)
class QueueDepth:
    """A queue's messages, as SQS counts them (approximately)."""

    role: str  # input, dead letters, output
    name: str
    visible: int
    in_flight: int


def queue_depths(deployment) -> list[QueueDepth]:
    """The prefix's queues with their visible and in-flight messages (GetQueueAttributes)."""
    cfg = deployment.config
    depths = []
    for role, name in (("input", cfg.input_queue), ("dead letters", cfg.dead_letter_queue),
                       ("output", cfg.output_queue)):
        visible, in_flight = deployment.broker.queue(name).depth()
        depths.append(QueueDepth(role, name, visible, in_flight))
    return depths


@dataclass
class Overview:
    """The deployment at a glance (`cloudkon status` without a job): its queues, its
    workers as their registry records say, and the jobs not finished."""

    queues: list[QueueDepth]
    workers: list[WorkerRecord]
    jobs: list[Progress]
    now: float

    @property
    def dead_letters(self) -> int:
        return sum(q.visible + q.in_flight for q in self.queues if q.role == "dead letters")

    @property
    def healthy(self) -> bool:
        """No dead letter waits, no worker is stale and every unfinished job is healthy."""
        return (not self.dead_letters and all(p.healthy for p in self.jobs)
                and not any(w.stale(self.now) for w in self.workers))

    def to_dict(self) -> dict:
        return {"queues": [vars(q) for q in self.queues],
                "workers": [{**w._asdict(), "stale": w.stale(self.now)} for w in self.workers],
                "jobs": [p.to_dict() for p in self.jobs]}

    def to_text(self) -> str:
        lines = [f"{q.role + ' queue':<19} {q.name:<40} visible {q.visible:,}"
                 f"  in flight {q.in_flight:,}" for q in self.queues]
        stale = sum(w.stale(self.now) for w in self.workers)
        lines.append(f"workers: {len(self.workers)}" + (f" ({stale} stale)" if stale else ""))
        for w in self.workers:
            lines.append(f"  {w.worker_id:<30} last beat {self.now - w.last_beat:.0f} s ago"
                         f"  busy {w.busy}/{w.threads}  tasks done {w.tasks_done:,}"
                         + ("  STALE" if w.stale(self.now) else ""))
        lines.append(f"jobs not finished: {len(self.jobs)}")
        lines += ["  " + p.line() for p in self.jobs]
        return "\n".join(lines)


def overview(deployment, limit: int | None = None) -> Overview:
    """The queues, the workers' records and the unfinished jobs of the last ``limit``."""
    running = [p for p in list_jobs(deployment.manifests, deployment.leases, limit)
               if not p.finished]
    return Overview(queue_depths(deployment), deployment.workers.workers(), running,
                    time.time())


def cancel(manifests, leases, job_id: str) -> str:
    """Mark the job cancelled; return what became of it: ``cancelled``, ``already
    cancelled``, or ``finished`` (a job whose every task has a result is left alone)."""
    progress = ProgressReader(job_id, manifests, leases).read()
    if progress.state == CANCELLED:
        return "already cancelled"
    if progress.state in (DONE, FAILED_SPLIT):
        return "finished"
    changed = manifests.cancel(job_id)
    if changed is None:
        raise JobNotFoundError(f"job {job_id} does not exist (no manifest, no upload)")
    return "cancelled" if changed else "already cancelled"


class NotIn:
    """The lines not in a set: what a retry skips."""

    def __init__(self, lines: set[int]) -> None:
        self.lines = lines

    def __contains__(self, line: object) -> bool:
        return line not in self.lines


def _runs(lines: list[int]) -> list[list[int]]:
    """Sorted line numbers as runs [first, last]."""
    runs: list[list[int]] = []
    for line in lines:
        if runs and line == runs[-1][1] + 1:
            runs[-1][1] = line
        else:
            runs.append([line, line])
    return runs


def retry(deployment, job_id: str, statuses: tuple[str, ...], workload: str | None = None,
          bundle_size: int = DEFAULT_REMOTE_BUNDLE_SIZE,
          bundle_ms: float = DEFAULT_REMOTE_BUNDLE_MS) -> Retry | None:
    """Send the job's tasks whose latest result has one of ``statuses`` again, as a new
    attempt with the same task ids, their commands read from the job's workload (the S3
    object or the file it was submitted from, or ``workload``); None if there are none."""
    manifests, leases = deployment.manifests, deployment.leases
    reader = ProgressReader(job_id, manifests, leases, codec=deployment.codec)
    progress = reader.read()
    record = reader.record
    if progress.state == CANCELLED:
        raise UsageError(f"job {job_id} is cancelled; submit its workload again instead")
    if progress.state in (SPLITTING, FAILED_SPLIT):
        raise UsageError(f"job {job_id} is {progress.state}: it has no tasks to retry")
    if progress.state != DONE:
        raise UsageError(f"job {job_id} is still running: {progress.tasks - progress.done:,} of"
                         f" {progress.tasks:,} tasks have no result yet; retry once it is done"
                         f" (`cloudkon status {job_id} --watch`)")
    lines = sorted(line for line, status in reader.statuses.items() if status in statuses)
    if not lines:
        return None
    attempt = 2 + len(record.retries)
    if attempt > MAX_JOB_ATTEMPTS:
        raise UsageError(f"job {job_id} has had {attempt - 1} attempts, the most a job may"
                         " have; submit its failed tasks as a new job")
    runs = _runs(lines)
    if len(runs) > MAX_RETRY_RUNS:
        raise UsageError(f"job {job_id}: the {len(lines):,} tasks to retry lie in {len(runs):,}"
                         f" separate runs of lines; one retry records at most {MAX_RETRY_RUNS:,}")
    wanted = set(lines)
    source = workload or record.manifest.source
    submitted_at = time.time()
    version = record.manifest.version_id if source == record.manifest.source else ""
    report = split(job_workload(deployment, source, NotIn(wanted), version), job_id,
                   deployment.input_queue, deployment.output_queue.url, bundle_size, bundle_ms,
                   deployment.senders, attempt=attempt, codec=deployment.codec)
    if report.tasks != len(wanted):
        log.warning("job %s: %d tasks to retry, but %s holds %d of them as tasks; those"
                    " sent run again", job_id, len(wanted), source, report.tasks,
                    extra={"job_id": job_id})
    if not report.tasks:
        raise UsageError(f"job {job_id}: {source} holds none of the lines to retry (changed"
                         " since the submit?)")
    done = Retry(attempt, runs, report.tasks, report.bundles, submitted_at, list(statuses))
    manifests.add_retry(record, done)
    return done


def job_workload(deployment, source: str, skip=None, version_id: str = "") -> Workload:
    """The job's workload, from S3 (the object version ``version_id``, the one split, if
    the bucket keeps versions) or a local file, read with ``skip``."""
    if source.startswith("s3://"):
        from cloudkon.aws import call

        bucket, _, key = source[len("s3://"):].partition("/")

        def opener():
            version = {"VersionId": version_id} if version_id else {}
            return call(f"read {source}", deployment.s3.get_object, Bucket=bucket,
                        Key=key, **version)["Body"]

        return Workload(source, opener=opener, skip=skip)
    if not os.path.isfile(source):
        raise UsageError(f"the job's workload {source} is not on this machine (it was"
                         " submitted with --direct elsewhere); pass --workload FILE")
    return Workload(source, skip=skip)
