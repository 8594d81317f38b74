"""The client side of the remote flavour: `cloudkon submit` and `cloudkon collect`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.errors import JobConflictError, WorkloadError
from cloudkon.limits import DEFAULT_REMOTE_BUNDLE_MS, DEFAULT_REMOTE_BUNDLE_SIZE
from cloudkon.model import ResultBundle
from cloudkon.workload import Workload
from submitter.collect import Collection, Collector
from submitter.deployment import WORKLOADS_PREFIX, Deployment
from submitter.manifest import Manifest
from submitter.submit import (
    SHA256_METADATA,
    SUBMITTED_AT_METADATA,
    submit_workload,
    workload_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """A workload uploaded for the Lambda to split, or found submitted before (``again``)."""

    uri: str
    submitted_at: float
    digest: str
    again: bool = False  # the job exists with this workload: nothing was uploaded


def upload(deployment: Deployment, path: str, job_id: str) -> Upload:
    """Check the workload and upload it for the Lambda to split. The queues are looked up
    first, so that a missing one is named here rather than in the Lambda's log. If the job
    exists, nothing is uploaded: JobConflictError if with another workload; with this one
    it is the same job, and the Upload says so."""
    workload = Workload(path)
    workload.check()
    submitted_at = time.time()
    deployment.input_queue, deployment.output_queue  # noqa: B018 - NotSetUpError if missing
    digest = workload.sha256()
    existing = deployment.manifests.load(job_id)
    if existing is not None:
        if not existing.same_workload(digest):
            raise JobConflictError(job_id, existing.digest)
        return Upload(existing.source, existing.submitted_at, digest, again=True)
    bucket = deployment.bucket
    key = workload_key(job_id, os.path.basename(path))
    for uri, other in _waiting_uploads(deployment, job_id):  # uploaded, not split yet
        if other != digest:
            raise JobConflictError(job_id, other)
        return Upload(uri, submitted_at, digest, again=True)

    def put(**params):
        with open(path, "rb") as body:  # opened afresh for each attempt
            return deployment.s3.put_object(Body=body, **params)

    try:
        call(f"upload {path} to bucket {bucket}", put, Bucket=bucket, Key=key,
             Metadata={SUBMITTED_AT_METADATA: f"{submitted_at:.6f}", SHA256_METADATA: digest})
    except OSError as exc:
        raise WorkloadError(path, exc.strerror or str(exc)) from None
    return Upload(f"s3://{bucket}/{key}", submitted_at, digest)


def _waiting_uploads(deployment: Deployment, job_id: str) -> list[tuple[str, str]]:
    """(S3 URI, SHA-256 from its metadata, "" if none) of the job's uploads in the bucket:
    the first few, enough to see whether the job was uploaded with another workload."""
    bucket = deployment.bucket
    try:
        page = call(f"list bucket {bucket}", deployment.s3.list_objects_v2,
                    expected=("NoSuchBucket",), Bucket=bucket,
                    Prefix=f"{WORKLOADS_PREFIX}{job_id}/", MaxKeys=_UPLOADS_LOOKED_AT)
    except ClientError:
        return []  # the upload names the missing bucket
    found = []
    for item in page.get("Contents", ()):
        try:
            head = call(f"read s3://{bucket}/{item['Key']}", deployment.s3.head_object,
                        expected=("404", "NoSuchKey"), Bucket=bucket, Key=item["Key"])
        except ClientError:
            continue  # gone since the listing
        found.append((f"s3://{bucket}/{item['Key']}",
                      head.get("Metadata", {}).get(SHA256_METADATA, "")))
    return found


# Uploads of a job not split yet that `submit` looks at before uploading another.
_UPLOADS_LOOKED_AT = 10


def send_direct(deployment: Deployment, path: str, job_id: str,
                bundle_size: int = DEFAULT_REMOTE_BUNDLE_SIZE,
                bundle_ms: float = DEFAULT_REMOTE_BUNDLE_MS) -> tuple[Manifest, bool]:
    """Split the workload here and send its bundles to the input queue (no S3, no Lambda);
    return the job's manifest and whether the job was submitted before with this workload
    (then nothing was sent again). JobConflictError, nothing sent, if with another one."""
    workload = Workload(path)
    workload.check()
    codec = deployment.codec  # the signing key read before anything is recorded
    submitted_at = time.time()
    manifest = submit_workload(workload, job_id, submitted_at, deployment.input_queue,
                               deployment.output_queue.url, deployment.manifests, bundle_size,
                               bundle_ms, deployment.senders, digest=workload.sha256(),
                               codec=codec)
    if manifest.error:
        raise WorkloadError(path, manifest.error)
    return manifest, manifest.submitted_at != submitted_at


def collect(deployment: Deployment, job_id: str, timeout: float | None,
            on_results: Callable[[ResultBundle], None] | None = None,
            on_total: Callable[[int], None] | None = None,
            already: list[ResultBundle] | None = None, digest: str | None = None) -> Collection:
    """Collect the results of ``job_id`` until every task has one, the job is cancelled,
    ``timeout`` passes or the user interrupts; ``already`` are results collected before
    (a results file resumed), which count and are not collected again. With ``digest``
    (the workload just submitted), a job of another workload is JobConflictError."""
    try:
        outbox = deployment.output_queue
        codec = deployment.codec
    except KeyboardInterrupt:
        return Collector.interrupted(job_id)
    collector = Collector(job_id, outbox, deployment.manifests, deployment.leases,
                          on_results=on_results, on_total=on_total,
                          exists=lambda: uploaded(deployment, job_id), already=already,
                          commands=lambda lines: workload_commands(deployment, job_id, lines),
                          digest=digest, codec=codec, workers=deployment.workers)
    return collector.run(timeout)


def workload_commands(deployment: Deployment, job_id: str, lines: set[int]) -> dict[int, str]:
    """The commands on ``lines`` of the job's workload (read from S3, or from the file it
    was submitted from when it is on this machine); UsageError if it cannot be read."""
    from submitter.jobs import NotIn, job_workload

    manifest = deployment.manifests.load(job_id)
    if manifest is None:
        return {}
    return dict(job_workload(deployment, manifest.source, NotIn(lines), manifest.version_id))


def uploaded(deployment: Deployment, job_id: str) -> bool:
    """True if a workload of ``job_id`` is in the bucket (uploaded, not split yet)."""
    bucket = deployment.bucket
    try:
        page = call(f"list bucket {bucket}", deployment.s3.list_objects_v2,
                    expected=("NoSuchBucket",), Bucket=bucket,
                    Prefix=f"{WORKLOADS_PREFIX}{job_id}/", MaxKeys=1)
    except ClientError:
        return False
    return bool(page.get("KeyCount") or page.get("Contents"))
