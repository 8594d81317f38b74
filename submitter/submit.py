"""Submitting a job: from a local file (`cloudkon submit --direct`) or from an S3 upload
(the Lambda of ``app.py``), the same steps: manifest started, bundles sent, manifest done.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.backends import MessageQueue
from cloudkon.codec import WIRE, WireCodec
from cloudkon.errors import CloudKonError, JobConflictError, SplitPaused, WorkloadError
from cloudkon.limits import (
    DEFAULT_REMOTE_BUNDLE_MS,
    DEFAULT_REMOTE_BUNDLE_SIZE,
    DEFAULT_SENDERS,
    SPLIT_MAX_FAILURES,
)
from cloudkon.model import JOB_ID_PATTERN
from cloudkon.workload import Workload
from submitter.deployment import WORKLOADS_PREFIX, Deployment
from submitter.manifest import REJECTED, SUBMITTING, Manifest, RefusedUpload, SplitProgress
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
                    codec: WireCodec = WIRE,
                    should_stop: Callable[[], bool] | None = None) -> Manifest:
    """Send the workload's tasks to ``inbox`` and record the job's manifest; return it.

    ``digest`` is the workload's SHA-256 (read here if not given): a job id names one
    workload. If the job exists with another workload, JobConflictError and nothing is
    sent; if with this one, its manifest is returned and nothing is sent again (unless
    its split did not finish: then it goes on, the bundles deduplicated by their keys).
    A workload that cannot be used at all (empty, binary, no tasks) is recorded REJECTED
    with the reason, and nothing is sent. Bundles are encoded (and signed, if it signs) by
    ``codec``.

    The split records its progress beside the manifest and continues from the record a
    split of the job left (a Lambda retried or invoked again). ``should_stop`` is asked
    before each batch: once True, the split stops, records how far it got and raises
    SplitPaused. A split that raises records the error first; after
    SPLIT_MAX_FAILURES in a row without progress the job is recorded REJECTED with it."""
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
        started = replace(started, split_at=existing.split_at)
    record = manifests.load_record(job_id) if existing is not None else None
    resume = record.split if record is not None else None
    if resume is not None and resume.bundles:
        # The bundling the split started with, whatever this one was asked for: the same
        # bundles under the same keys.
        bundle_size, bundle_ms = resume.bundle_size or bundle_size, resume.bundle_ms or bundle_ms
        log.info("job %s: its split did not finish; continuing %s after line %d, from bundle"
                 " %d (bundles sent since the last record are sent again, deduplicated by"
                 " key)", job_id, workload.path, resume.line, resume.bundles,
                 extra={"job_id": job_id})
    elif existing is not None:
        log.info("job %s: its split did not finish; splitting %s again (bundles sent before"
                 " are deduplicated by key)", job_id, workload.path, extra={"job_id": job_id})
    try:
        workload.check()
    except WorkloadError as exc:
        return _reject(manifests, started, exc.reason)
    base = resume if resume is not None and resume.bundles else None
    invocation = replace(resume or SplitProgress(), invocations=(
        resume.invocations if resume is not None else 0) + 1, at=time.time())
    manifests.save_progress(job_id, invocation)  # the split is alive: its record says so

    def on_progress(progress: SplitProgress) -> None:
        manifests.save_progress(job_id, replace(
            progress, at=time.time(), invocations=invocation.invocations,
            failures=invocation.failures, error=invocation.error))

    try:
        report = split(workload, job_id, inbox, reply_to, bundle_size, bundle_ms, senders,
                       resume=base, on_progress=on_progress, should_stop=should_stop,
                       codec=codec)
    except Exception as exc:
        _record_failure(manifests, started, invocation, exc)
        raise
    if report.paused:
        sent = report.progress.bundles if report.progress is not None else invocation.bundles
        raise SplitPaused(f"job {job_id}: split stopped before its time ran out, {sent:,}"
                          f" bundles sent; it continues from its progress record",
                          sent > invocation.bundles)
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


def _record_failure(manifests, started: Manifest, invocation: SplitProgress,
                    exc: Exception) -> None:
    """Record in the split's progress that it ended in ``exc`` (the split recorded how far
    it got); after SPLIT_MAX_FAILURES in a row without progress, give the job up."""
    job_id = started.job_id
    try:
        record = manifests.load_record(job_id)
        progress = (record.split if record is not None and record.split is not None
                    else invocation)
        progressed = progress.bundles > invocation.bundles
        failures = 1 if progressed else invocation.failures + 1
        manifests.save_progress(job_id, replace(progress, at=time.time(), failures=failures,
                                                error=f"{type(exc).__name__}: {exc}"))
        if failures >= SPLIT_MAX_FAILURES:
            _reject(manifests, started, f"the split failed {failures} times in a row without"
                                        f" progress; the last time: {exc}")
    except CloudKonError as record_exc:
        log.error("job %s: the failure of its split could not be recorded: %s", job_id,
                  record_exc, extra={"job_id": job_id})


def _reject(manifests, started: Manifest, reason: str) -> Manifest:
    rejected = replace(started, status=REJECTED, error=reason)
    manifests.save(rejected)
    log.warning("job %s: %s: %s; nothing sent", started.job_id, started.source, reason,
                extra={"job_id": started.job_id})
    return rejected


def handle_upload(deployment: Deployment, bucket: str, key: str,
                  bundle_size: int = DEFAULT_REMOTE_BUNDLE_SIZE,
                  bundle_ms: float = DEFAULT_REMOTE_BUNDLE_MS,
                  should_stop: Callable[[], bool] | None = None,
                  continue_split: Callable[[], None] | None = None) -> Manifest | None:
    """Split the workload uploaded to ``bucket`` under ``key`` (decoded: S3 events carry
    keys quote_plus-encoded), streaming it; None if the key or object is not a workload,
    or if the split stopped as ``should_stop`` asked and ``continue_split`` (which starts
    another split of the upload, later) was called. A split that stopped without sending
    anything, or with nothing to continue it, raises SplitPaused: the Lambda's retry of the
    event continues it, from its progress record."""
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
                                   codec=deployment.codec, should_stop=should_stop)
    except SplitPaused as exc:
        if not exc.progressed or continue_split is None:
            raise
        log.warning("%s; starting its continuation", exc, extra={"job_id": job_id})
        continue_split()
        return None
    except JobConflictError as exc:
        log.warning("job %s: %s refused: %s", job_id, source, exc, extra={"job_id": job_id})
        deployment.manifests.refuse_upload(job_id, RefusedUpload(
            source, digest, etag, str(exc), time.time()))
        return None
    log.info("job %s: %s, %d tasks in %d bundles, %.1f s", job_id, manifest.status.lower(),
             manifest.tasks, manifest.bundles, time.monotonic() - started,
             extra={"job_id": job_id})
    return manifest
