"""A job's manifest: what its workload held, recorded where the collector finds it.

The splitter (the Lambda, or `cloudkon submit --direct`) records the manifest twice: when
it starts (SUBMITTING, so that a collector knows the job exists) and when every bundle is
sent (SUBMITTED, with the task count the collector waits for), or REJECTED with the reason
when the workload cannot be used at all (empty, binary). It is an item of the lease table,
keyed ``JOB_ID#manifest``, which no bundle key can be (those end in ``#`` and a number).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field, replace

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.backends.dynamodb import KEY, TTL_ATTRIBUTE
from cloudkon.errors import CodecError
from cloudkon.limits import SQS_MAX_RETENTION_SECONDS

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

    def done(self, **counts) -> Manifest:
        """This manifest as SUBMITTED with the counts given."""
        return replace(self, status=SUBMITTED, **counts)


def manifest_key(job_id: str) -> str:
    return f"{job_id}#manifest"


class DynamoManifests:
    """Manifests as items of the lease table ``table``."""

    def __init__(self, client, table: str,
                 retention_seconds: int = SQS_MAX_RETENTION_SECONDS) -> None:
        self.client = client
        self.table = table
        self.retention_seconds = retention_seconds  # then TTL may sweep the item

    def start(self, manifest: Manifest) -> None:
        """Record a SUBMITTING manifest unless the job already has one (a redelivery)."""
        try:
            call(f"table {self.table} (manifest of job {manifest.job_id})", self.client.put_item,
                 expected=("ConditionalCheckFailedException",), TableName=self.table,
                 Item=self._item(manifest), ConditionExpression=f"attribute_not_exists({KEY})")
        except ClientError:
            pass  # recorded before, by an earlier delivery of the same upload

    def save(self, manifest: Manifest) -> None:
        """Record the manifest, replacing what the job had."""
        call(f"table {self.table} (manifest of job {manifest.job_id})", self.client.put_item,
             TableName=self.table, Item=self._item(manifest))

    def load(self, job_id: str) -> Manifest | None:
        """The job's manifest, or None if it has none (yet)."""
        item = call(f"table {self.table} (manifest of job {job_id})", self.client.get_item, TableName=self.table,
                    Key={KEY: {"S": manifest_key(job_id)}}, ConsistentRead=True).get("Item")
        if item is None or "manifest" not in item:
            return None
        return Manifest.from_json(item["manifest"]["S"])

    def _item(self, manifest: Manifest) -> dict:
        return {
            KEY: {"S": manifest_key(manifest.job_id)},
            "status": {"S": manifest.status},
            "manifest": {"S": manifest.to_json()},
            TTL_ATTRIBUTE: {"N": str(int(time.time()) + self.retention_seconds)},
        }


class MemoryManifests:
    """Manifests in memory, with the same contract: for the local backends and tests."""

    def __init__(self) -> None:
        self._manifests: dict[str, Manifest] = {}
        self._lock = threading.Lock()

    def start(self, manifest: Manifest) -> None:
        with self._lock:
            self._manifests.setdefault(manifest.job_id, manifest)

    def save(self, manifest: Manifest) -> None:
        with self._lock:
            self._manifests[manifest.job_id] = manifest

    def load(self, job_id: str) -> Manifest | None:
        with self._lock:
            return self._manifests.get(job_id)
