"""Submitting a job: from a local file (`cloudkon submit --direct`) or from an S3 upload
(the Lambda of ``app.py``), the same steps: manifest started, bundles sent, manifest done.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.backends import MessageQueue
from cloudkon.codec import WIRE, WireCodec
from cloudkon.errors import JobConflictError, WorkloadError
from cloudkon.limits import DEFAULT_REMOTE_BUNDLE_MS, DEFAULT_REMOTE_BUNDLE_SIZE, DEFAULT_SENDERS
from cloudkon.model import JOB_ID_PATTERN
from cloudkon.workload import Workload
from submitter.deployment import WORKLOADS_PREFIX, Deployment
from submitter.manifest import REJECTED, SUBMITTING, Manifest, RefusedUpload
from submitter.split import split

log = logging.getLogger(__name__)

# The object metadata that carries the submit time from the client to the Lambda.
SUBMITTED_AT_METADATA = "cloudkon-submitted-at"
# The object metadata that carries the workload's SHA-256 (hex), as the client computed it.
SHA256_METADATA = "cloudkon-sha256"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def workload_key(job_id: str, filename: str) -> str:
    """The S3 key a workload of job ``job_id`` is uploaded to."""
    return f"{WORKLOADS_PREFIX}{job_id}/{filename}"


def job_of_key(key: str) -> str | None:
    """The job id in a workload key (``workloads/JOB_ID/NAME``), or None if it is not one."""
    if not key.startswith(WORKLOADS_PREFIX):
        return None
    job_id, sep, name = key[len(WORKLOADS_PREFIX):].partition("/")
    if not sep or not name or not JOB_ID_PATTERN.fullmatch(job_id):
        return None
    return job_id


def submit_workload(workload: Workload, job_id: str, submitted_at: float, inbox: MessageQueue,
                    reply_to: str, manifests, bundle_size: int = DEFAULT_REMOTE_BUNDLE_SIZE,
                    bundle_ms: float = DEFAULT_REMOTE_BUNDLE_MS,
                    senders: int = DEFAULT_SENDERS, digest: str | None = None,
                    etag: str = "", version_id: str = "",
                    codec: WireCodec = WIRE) -> Manifest:
    """Send the workload's tasks to ``inbox`` and record the job's manifest; return it.

    ``digest`` is the workload's SHA-256 (read here if not given): a job id names one
    workload. If the job exists with another workload, JobConflictError and nothing is
    sent; if with this one, its manifest is returned and nothing is sent again (unless
    its split did not finish: then it goes on, the bundles deduplicated by their keys).
    A workload that cannot be used at all (empty, binary, no tasks) is recorded REJECTED
    with the reason, and nothing is sent. Bundles are encoded (and signed, if it signs) by
    ``codec``."""
    if digest is None:
        digest = workload.sha256()
    started = Manifest(job_id, SUBMITTING, workload.path, submitted_at, split_at=time.time(),
                       digest=digest, etag=etag, version_id=version_id)
    existing = manifests.start(started)
    if existing is not None:
        if not existing.same_workload(digest):
            raise JobConflictError(job_id, existing.digest)
        if existing.final:
            log.info("job %s: %s is the job's workload, split before; nothing sent again",
                     job_id, workload.path, extra={"job_id": job_id})
            return existing
        log.info("job %s: its split did not finish; splitting %s again (bundles sent before"
                 " are deduplicated by key)", job_id, workload.path, extra={"job_id": job_id})
    try:
        workload.check()
    except WorkloadError as exc:
        return _reject(manifests, started, exc.reason)
    report = split(workload, job_id, inbox, reply_to, bundle_size, bundle_ms, senders,
                   codec=codec)
    if not report.tasks:
        reason = (f"no line is a task ({report.bad_line_count} bad line(s))"
                  if report.bad_line_count else "holds no tasks (only blank lines and comments)")
        return _reject(manifests, started, reason)
    if workload.digest is not None and workload.digest != digest:
        log.warning("job %s: %s changed while it was submitted (sha256 %s, then %s); the job"
                    " is what was split", job_id, workload.path, digest[:12],
                    workload.digest[:12], extra={"job_id": job_id})
        started = replace(started, digest=workload.digest)
    manifest = started.done(tasks=report.tasks, bundles=report.bundles,
                            bad_line_count=report.bad_line_count,
                            bad_lines=[list(b) for b in report.bad_lines],
                            last_line=report.last_line, skipped=report.skipped)
    manifests.save(manifest)
    return manifest


def _reject(manifests, started: Manifest, reason: str) -> Manifest:
    rejected = replace(started, status=REJECTED, error=reason)
    manifests.save(rejected)
    log.warning("job %s: %s: %s; nothing sent", started.job_id, started.source, reason,
                extra={"job_id": started.job_id})
    return rejected


def handle_upload(deployment: Deployment, bucket: str, key: str,
                  bundle_size: int = DEFAULT_REMOTE_BUNDLE_SIZE,
                  bundle_ms: float = DEFAULT_REMOTE_BUNDLE_MS) -> Manifest | None:
    """Split the workload uploaded to ``bucket`` under ``key`` (decoded: S3 events carry
    keys quote_plus-encoded), streaming it; None if the key or object is not a workload."""
    source = f"s3://{bucket}/{key}"
    job_id = job_of_key(key)
    if job_id is None:
        log.error("%s: not a workload key (expected %sJOB_ID/FILE); ignored", source,
                  WORKLOADS_PREFIX)
        return None
    s3 = deployment.s3
    try:
        head = call(f"read {source}", s3.head_object, expected=("404", "NoSuchKey"),
                    Bucket=bucket, Key=key)
    except ClientError:
        log.warning("job %s: %s is gone; nothing to split", job_id, source,
                    extra={"job_id": job_id})
        return None
    try:
        submitted_at = float(head.get("Metadata", {}).get(SUBMITTED_AT_METADATA, ""))
    except ValueError:
        submitted_at = head["LastModified"].timestamp()
    version = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}

    def opener():
        return call(f"read {source}", s3.get_object, Bucket=bucket, Key=key, **version)["Body"]

    workload = Workload(source, opener=opener)
    etag = head.get("ETag", "").strip('"')
    # The client's digest saves reading the object twice; one that is not there (an upload
    # by another tool) is read here. The split hashes what it reads, and records that.
    digest = head.get("Metadata", {}).get(SHA256_METADATA, "")
    if not _SHA256_HEX.fullmatch(digest):
        digest = workload.sha256()
    log.info("job %s: splitting %s (%d bytes)", job_id, source, head.get("ContentLength", 0),
             extra={"job_id": job_id})
    started = time.monotonic()
    try:
        manifest = submit_workload(workload, job_id, submitted_at, deployment.input_queue,
                                   deployment.output_queue.url, deployment.manifests,
                                   bundle_size, bundle_ms, deployment.senders, digest=digest,
                                   etag=etag, version_id=head.get("VersionId") or "",
                                   codec=deployment.codec)
    except JobConflictError as exc:
        log.warning("job %s: %s refused: %s", job_id, source, exc, extra={"job_id": job_id})
        deployment.manifests.refuse_upload(job_id, RefusedUpload(
            source, digest, etag, str(exc), time.time()))
        return None
    log.info("job %s: %s, %d tasks in %d bundles, %.1f s", job_id, manifest.status.lower(),
             manifest.tasks, manifest.bundles, time.monotonic() - started,
             extra={"job_id": job_id})
    return manifest
