"""A job's manifest: what its workload held, recorded where the collector finds it.

The splitter (the Lambda, or `cloudkon submit --direct`) records the manifest twice: when
it starts (SUBMITTING, so that a collector knows the job exists) and when every bundle is
sent (SUBMITTED, with the task count the collector waits for), or REJECTED with the reason
when the workload cannot be used at all (empty, binary). It is an item of the lease table,
keyed ``JOB_ID#manifest``, which no bundle key can be (those end in ``#`` and a number).

The same item is the job's record for operating it: ``cancelled_at`` once `cloudkon
cancel` marked it (workers read it through ``LeaseStore.job_state``), and ``retries``,
the attempts `cloudkon retry` added, each with the lines it runs again. Both are
attributes beside the manifest, so that a splitter saving the manifest leaves them be.

While the job is SUBMITTING, ``split_progress`` beside the manifest is the split's progress
record (:class:`SplitProgress`): the bundles sent, the line they end at, and when it was
written. A split that is retried continues from it; one whose record stops changing for
SPLIT_STALL_SECONDS has stopped, and readers say so (:func:`split_failure`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field, replace

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.backends.dynamodb import CANCELLED_ATTRIBUTE, KEY, TTL_ATTRIBUTE
from cloudkon.errors import CodecError, UsageError
from cloudkon.limits import SPLIT_MAX_FAILURES, SPLIT_STALL_SECONDS, SQS_MAX_RETENTION_SECONDS
from cloudkon.model import job_key

SUBMITTING = "SUBMITTING"
SUBMITTED = "SUBMITTED"
REJECTED = "REJECTED"
_STATUSES = (SUBMITTING, SUBMITTED, REJECTED)


@dataclass(frozen=True)
class Manifest:
    """What a job's workload held; ``tasks`` and the rest are final once SUBMITTED."""

    job_id: str
    status: str
    source: str  # where the workload came from: s3://bucket/key, or a local path
    submitted_at: float  # seconds since the epoch, when the user submitted the job
    tasks: int = 0
    bundles: int = 0
    bad_line_count: int = 0
    bad_lines: list[list] = field(default_factory=list)  # [line, reason] of the first few
    last_line: int = 0  # the last line that is a task
    skipped: list[list[int]] | None = field(default_factory=list)  # non-task runs; None: unknown
    error: str = ""  # why the job was REJECTED
    split_at: float = 0.0  # when the splitter started (the Lambda's start for an upload)
    # The workload's identity: the SHA-256 of its bytes (hex; "" in records older than it),
    # and for an upload the S3 object's ETag and version id ("" if the bucket keeps none).
    digest: str = ""
    etag: str = ""
    version_id: str = ""

    @property
    def final(self) -> bool:
        return self.status != SUBMITTING

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            doc = json.loads(text)
            manifest = cls(**doc)
        except (ValueError, TypeError) as exc:
            raise CodecError(f"not a job manifest: {exc}") from None
        if manifest.status not in _STATUSES:
            raise CodecError(f"job manifest of unknown status {manifest.status!r}")
        return manifest

    def same_workload(self, digest: str) -> bool:
        """True if ``digest`` is this job's workload's: submitting it again is this job."""
        return bool(self.digest) and self.digest == digest

    def task_lines(self) -> bytearray:
        """For each line number (the index), 1 if the line is a task of the job: from 1 to
        the last task line, but the runs skipped (blank, comment, bad lines) where known."""
        tasks = bytearray(b"\1") * (self.last_line + 1)
        tasks[0] = 0
        for first, last in self.skipped or ():
            first, last = max(first, 1), min(last, self.last_line)
            if first <= last:
                tasks[first:last + 1] = bytes(last + 1 - first)
        return tasks

    def done(self, **counts) -> Manifest:
        """This manifest as SUBMITTED with the counts given."""
        return replace(self, status=SUBMITTED, **counts)


def manifest_key(job_id: str) -> str:
    return job_key(job_id)


@dataclass(frozen=True)
class Retry:
    """One attempt `cloudkon retry` added: the lines it runs again, as runs [first, last]."""

    attempt: int  # 2, 3, ...
    lines: list[list[int]]
    tasks: int
    bundles: int
    submitted_at: float
    statuses: list[str] = field(default_factory=list)  # what it retried: failed, timed_out

    def __contains__(self, line: int) -> bool:
        return any(first <= line <= last for first, last in self.lines)


@dataclass(frozen=True)
class SplitProgress:
    """How far a job's split got: every bundle before ``bundles`` was sent, and they hold
    the tasks up to line ``line``; the counts are those of the lines read so far. A split
    continued from it reads on after ``line``, numbering bundles from ``bundles``."""

    bundles: int = 0  # messages sent: bundle seqs 0 .. bundles - 1
    groups: int = 0  # bundles as the workload made them (before halving to fit a message)
    line: int = 0  # the last line of the last bundle sent
    tasks: int = 0
    bad_line_count: int = 0
    bad_lines: list[list] = field(default_factory=list)
    last_line: int = 0  # the last line that is a task, so far
    skipped: list[list[int]] | None = field(default_factory=list)
    bundle_size: int = 0  # the bundling the split started with, kept when it continues
    bundle_ms: float = 0.0
    at: float = 0.0  # when this was recorded (seconds since the epoch, the splitter's clock)
    invocations: int = 0  # how many times a split of the job started
    failures: int = 0  # splits in a row that ended in an error without progress
    error: str = ""  # the error the last split ended with ("" if it did not)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SplitProgress:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise CodecError(f"not a split progress record: {exc}") from None


@dataclass(frozen=True)
class RefusedUpload:
    """An upload under the job's id that the splitter refused (another workload), and why."""

    source: str
    digest: str
    etag: str
    reason: str
    at: float


@dataclass(frozen=True)
class JobRecord:
    """A job's manifest with what operating it added: a cancel, retries, refused uploads."""

    manifest: Manifest
    cancelled_at: float | None = None
    retries: tuple[Retry, ...] = ()
    refused: tuple[RefusedUpload, ...] = ()
    split: SplitProgress | None = None  # the split's progress record, if it wrote one

    @property
    def job_id(self) -> str:
        return self.manifest.job_id

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    def attempts(self) -> list[tuple[int, int]]:
        """(attempt, bundles) of every attempt, the first one's included."""
        return [(1, self.manifest.bundles)] + [(r.attempt, r.bundles) for r in self.retries]

    def latest_attempts(self) -> bytearray:
        """For each line (the index), the attempt whose result counts: 0 or 1 for the first."""
        latest = bytearray(self.manifest.last_line + 1)
        for retry in self.retries:
            for first, last in retry.lines:
                latest[first:last + 1] = bytes([retry.attempt]) * (last + 1 - first)
        return latest


def _retries_from_json(text: str) -> tuple[Retry, ...]:
    try:
        return tuple(Retry(**doc) for doc in json.loads(text))
    except (ValueError, TypeError) as exc:
        raise CodecError(f"not a list of job retries: {exc}") from None


def _retries_to_json(retries: tuple[Retry, ...]) -> str:
    return json.dumps([asdict(r) for r in retries], separators=(",", ":"))


def _refused_from_json(text: str) -> tuple[RefusedUpload, ...]:
    try:
        return tuple(RefusedUpload(**doc) for doc in json.loads(text))
    except (ValueError, TypeError) as exc:
        raise CodecError(f"not a list of refused uploads: {exc}") from None


# Lines of one retry are kept as runs in the job's record, which is a DynamoDB item of at
# most 400 KB: this many runs of [first, last] leave room for the manifest beside them.
MAX_RETRY_RUNS = 20_000
RETRIES_ATTRIBUTE = "retries"
RETRY_COUNT_ATTRIBUTE = "retry_count"
REFUSED_ATTRIBUTE = "refused_uploads"
PROGRESS_ATTRIBUTE = "split_progress"
# The refused uploads a record keeps (the first ones): enough to tell what happened.
MAX_REFUSED_UPLOADS = 10


class DynamoManifests:
    """Manifests as items of the lease table ``table``."""

    def __init__(self, client, table: str,
                 retention_seconds: int = SQS_MAX_RETENTION_SECONDS) -> None:
        self.client = client
        self.table = table
        self.retention_seconds = retention_seconds  # then TTL may sweep the item

    def start(self, manifest: Manifest) -> Manifest | None:
        """Record a SUBMITTING manifest unless the job already has one; return the one it
        has (a redelivery, a submit again, or another workload under the same id), or None
        if this call recorded it."""
        try:
            call(f"table {self.table} (manifest of job {manifest.job_id})", self.client.put_item,
                 expected=("ConditionalCheckFailedException",), TableName=self.table,
                 Item=self._item(manifest), ConditionExpression=f"attribute_not_exists({KEY})")
        except ClientError:
            existing = self.load(manifest.job_id)
            if existing is None:  # the record went between the two calls (TTL): try again
                return self.start(manifest)
            return existing
        return None

    def refuse_upload(self, job_id: str, refused: RefusedUpload) -> None:
        """Record an upload refused under the job's id beside its manifest (the first
        MAX_REFUSED_UPLOADS; the same upload delivered again once)."""
        while True:
            record = self.load_record(job_id)
            if record is None or not _refusal_is_new(record, refused):
                return
            item = call(f"table {self.table} (refused upload of job {job_id})",
                        self.client.get_item, TableName=self.table,
                        Key={KEY: {"S": manifest_key(job_id)}}, ConsistentRead=True,
                        ProjectionExpression=REFUSED_ATTRIBUTE).get("Item", {})
            before = item.get(REFUSED_ATTRIBUTE)
            text = json.dumps([asdict(r) for r in record.refused + (refused,)],
                              separators=(",", ":"))
            condition = (f"{REFUSED_ATTRIBUTE} = :before" if before
                         else f"attribute_not_exists({REFUSED_ATTRIBUTE})")
            values = {":refused": {"S": text}, **({":before": before} if before else {})}
            try:
                call(f"table {self.table} (refused upload of job {job_id})",
                     self.client.update_item, expected=("ConditionalCheckFailedException",),
                     TableName=self.table, Key={KEY: {"S": manifest_key(job_id)}},
                     UpdateExpression=f"SET {REFUSED_ATTRIBUTE} = :refused",
                     ConditionExpression=condition, ExpressionAttributeValues=values)
                return
            except ClientError:
                continue  # another refusal was recorded in between: read it and add to it

    def save(self, manifest: Manifest) -> None:
        """Record the manifest, replacing the job's manifest (and keeping a cancel or
        retries recorded beside it)."""
        item = self._item(manifest)
        call(f"table {self.table} (manifest of job {manifest.job_id})", self.client.update_item,
             TableName=self.table, Key={KEY: item[KEY]},
             UpdateExpression="SET #status = :status, manifest = :manifest, expires_at = :ttl",
             ExpressionAttributeNames={"#status": "status"},
             ExpressionAttributeValues={":status": item["status"], ":manifest": item["manifest"],
                                        ":ttl": item[TTL_ATTRIBUTE]})

    def save_progress(self, job_id: str, progress: SplitProgress) -> bool:
        """Record the split's progress beside the manifest while it is SUBMITTING; False
        (nothing written) once the manifest is final."""
        try:
            call(f"table {self.table} (split progress of job {job_id})",
                 self.client.update_item, expected=("ConditionalCheckFailedException",),
                 TableName=self.table, Key={KEY: {"S": manifest_key(job_id)}},
                 UpdateExpression=f"SET {PROGRESS_ATTRIBUTE} = :progress",
                 ConditionExpression="#status = :submitting",
                 ExpressionAttributeNames={"#status": "status"},
                 ExpressionAttributeValues={":progress": {"S": progress.to_json()},
                                            ":submitting": {"S": SUBMITTING}})
        except ClientError:
            return False
        return True

    def load(self, job_id: str) -> Manifest | None:
        """The job's manifest, or None if it has none (yet)."""
        record = self.load_record(job_id)
        return None if record is None else record.manifest

    def load_record(self, job_id: str) -> JobRecord | None:
        """The job's record (manifest, cancel, retries), or None if it has none (yet)."""
        item = call(f"table {self.table} (manifest of job {job_id})", self.client.get_item,
                    TableName=self.table, Key={KEY: {"S": manifest_key(job_id)}},
                    ConsistentRead=True).get("Item")
        return _record(item)

    def records(self) -> list[JobRecord]:
        """Every job's record in the table, oldest first: one Scan, filtered to records."""
        found = []
        params = {"TableName": self.table, "FilterExpression": "attribute_exists(manifest)"}
        while True:
            page = call(f"table {self.table} (list jobs)", self.client.scan, **params)
            found += [r for r in map(_record, page.get("Items", ())) if r is not None]
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(found, key=lambda r: (r.manifest.submitted_at, r.job_id))

    def cancel(self, job_id: str) -> bool | None:
        """Mark the job cancelled; True if this did, False if it was already, None if the
        job has no record."""
        try:
            response = call(
                f"table {self.table} (cancel job {job_id})", self.client.update_item,
                expected=("ConditionalCheckFailedException",), TableName=self.table,
                Key={KEY: {"S": manifest_key(job_id)}},
                UpdateExpression=f"SET {CANCELLED_ATTRIBUTE} ="
                                 f" if_not_exists({CANCELLED_ATTRIBUTE}, :now)",
                ConditionExpression=f"attribute_exists({KEY})",
                ExpressionAttributeValues={":now": {"N": f"{time.time():.6f}"}},
                ReturnValues="UPDATED_OLD")
        except ClientError:
            return None
        return CANCELLED_ATTRIBUTE not in response.get("Attributes", {})

    def add_retry(self, record: JobRecord, retry: Retry) -> None:
        """Record ``retry`` after the retries ``record`` holds; UsageError if another retry
        was recorded in between."""
        retries = record.retries + (retry,)
        try:
            call(f"table {self.table} (retry of job {record.job_id})", self.client.update_item,
                 expected=("ConditionalCheckFailedException",), TableName=self.table,
                 Key={KEY: {"S": manifest_key(record.job_id)}},
                 UpdateExpression=f"SET {RETRIES_ATTRIBUTE} = :retries,"
                                  f" {RETRY_COUNT_ATTRIBUTE} = :count",
                 ConditionExpression=f"attribute_exists({KEY}) AND"
                                     f" (attribute_not_exists({RETRY_COUNT_ATTRIBUTE})"
                                     f" OR {RETRY_COUNT_ATTRIBUTE} = :before)",
                 ExpressionAttributeValues={":retries": {"S": _retries_to_json(retries)},
                                            ":count": {"N": str(len(retries))},
                                            ":before": {"N": str(len(record.retries))}})
        except ClientError:
            raise UsageError(f"job {record.job_id}: another retry was recorded at the same"
                             " time; run `cloudkon status` and retry again if need be") from None

    def _item(self, manifest: Manifest) -> dict:
        return {
            KEY: {"S": manifest_key(manifest.job_id)},
            "status": {"S": manifest.status},
            "manifest": {"S": manifest.to_json()},
            TTL_ATTRIBUTE: {"N": str(int(time.time()) + self.retention_seconds)},
        }


def _refusal_is_new(record: JobRecord, refused: RefusedUpload) -> bool:
    """True if ``refused`` is to be added to the record's refused uploads."""
    return len(record.refused) < MAX_REFUSED_UPLOADS and not any(
        r.source == refused.source and r.digest == refused.digest for r in record.refused)


def _record(item: dict | None) -> JobRecord | None:
    if item is None or "manifest" not in item:
        return None
    cancelled = item.get(CANCELLED_ATTRIBUTE)
    retries = item.get(RETRIES_ATTRIBUTE)
    refused = item.get(REFUSED_ATTRIBUTE)
    progress = item.get(PROGRESS_ATTRIBUTE)
    return JobRecord(Manifest.from_json(item["manifest"]["S"]),
                     float(cancelled["N"]) if cancelled else None,
                     _retries_from_json(retries["S"]) if retries else (),
                     _refused_from_json(refused["S"]) if refused else (),
                     SplitProgress.from_json(progress["S"]) if progress else None)


def split_failure(record: JobRecord, now: float, unchanged_for: float = 0.0,
                  stall_seconds: float = SPLIT_STALL_SECONDS) -> str | None:
    """Why the job's split is taken as failed, in a sentence, or None while it may still
    end well: it was given up after SPLIT_MAX_FAILURES errors in a row (REJECTED with the
    split's progress record beside it), or its record has not changed for
    ``stall_seconds`` by ``now`` (the reader's clock against the splitter's: minutes, not
    seconds, so that clocks a little apart do not matter), or the reader has seen it
    unchanged for that long by its own clock (``unchanged_for``)."""
    m, p = record.manifest, record.split
    if m.status == REJECTED and p is not None and p.failures >= SPLIT_MAX_FAILURES:
        return f"the split failed {p.failures} times in a row; {p.error}"
    if m.status != SUBMITTING:
        return None
    last = max(p.at if p is not None else 0.0, m.split_at)
    # A record that says nothing of when its split started (0: unknown) is judged by the
    # reader's own watch alone.
    idle = max(now - last if last else 0.0, unchanged_for)
    if idle < stall_seconds:
        return None
    done = (f"{p.bundles:,} bundles ({p.tasks:,} tasks, to line {p.line:,}) sent"
            if p is not None else "no bundle recorded sent")
    reason = (f"its last attempt failed: {p.error}" if p is not None and p.error
              else "was the Lambda stopped? its log says why")
    return f"no progress for {idle:.0f} s ({done}); {reason}"


class MemoryManifests:
    """Manifests in memory, with the same contract: for the local backends and tests."""

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()

    def start(self, manifest: Manifest) -> Manifest | None:
        with self._lock:
            old = self._records.setdefault(manifest.job_id, JobRecord(manifest))
            return None if old.manifest is manifest else old.manifest

    def refuse_upload(self, job_id: str, refused: RefusedUpload) -> None:
        with self._lock:
            old = self._records.get(job_id)
            if old is None or not _refusal_is_new(old, refused):
                return
            self._records[job_id] = replace(old, refused=old.refused + (refused,))

    def save_progress(self, job_id: str, progress: SplitProgress) -> bool:
        with self._lock:
            old = self._records.get(job_id)
            if old is None or old.manifest.status != SUBMITTING:
                return False
            self._records[job_id] = replace(old, split=progress)
            return True

    def save(self, manifest: Manifest) -> None:
        with self._lock:
            old = self._records.get(manifest.job_id)
            self._records[manifest.job_id] = (JobRecord(manifest) if old is None
                                              else replace(old, manifest=manifest))

    def load(self, job_id: str) -> Manifest | None:
        record = self.load_record(job_id)
        return None if record is None else record.manifest

    def load_record(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._records.get(job_id)

    def records(self) -> list[JobRecord]:
        with self._lock:
            return sorted(self._records.values(),
                          key=lambda r: (r.manifest.submitted_at, r.job_id))

    def cancel(self, job_id: str) -> bool | None:
        with self._lock:
            old = self._records.get(job_id)
            if old is None:
                return None
            if old.cancelled:
                return False
            self._records[job_id] = replace(old, cancelled_at=time.time())
            return True

    def add_retry(self, record: JobRecord, retry: Retry) -> None:
        with self._lock:
            old = self._records[record.job_id]
            if len(old.retries) != len(record.retries):
                raise UsageError(f"job {record.job_id}: another retry was recorded at the"
                                 " same time")
            self._records[record.job_id] = replace(old, retries=old.retries + (retry,))
