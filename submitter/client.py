"""The client side of the remote flavour: `cloudkon submit` and `cloudkon collect`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.errors import WorkloadError
from cloudkon.limits import DEFAULT_REMOTE_BUNDLE_SIZE, DEFAULT_REMOTE_BUNDLE_MS
from cloudkon.model import ResultBundle
from cloudkon.workload import Workload
from submitter.collect import Collection, Collector
from submitter.deployment import WORKLOADS_PREFIX, Deployment
from submitter.manifest import Manifest
from submitter.submit import SUBMITTED_AT_METADATA, submit_workload, workload_key

log = logging.getLogger(__name__)


def upload(deployment: Deployment, path: str, job_id: str) -> tuple[str, float]:
    """Check the workload and upload it for the Lambda to split; return its S3 URI and the
    submit time. The queues are looked up first, so that a missing one is named here
    rather than in the Lambda's log."""
    Workload(path).check()
    submitted_at = time.time()
    deployment.input_queue, deployment.output_queue  # noqa: B018 - NotSetUpError if missing
    bucket = deployment.bucket
    key = workload_key(job_id, os.path.basename(path))

    def put(**params):
        with open(path, "rb") as body:  # opened afresh for each attempt
            return deployment.s3.put_object(Body=body, **params)

    try:
        call(f"upload {path} to bucket {bucket}", put, Bucket=bucket, Key=key,
             Metadata={SUBMITTED_AT_METADATA: f"{submitted_at:.6f}"})
    except OSError as exc:
        raise WorkloadError(path, exc.strerror or str(exc)) from None
    return f"s3://{bucket}/{key}", submitted_at


def send_direct(deployment: Deployment, path: str, job_id: str,
                bundle_size: int = DEFAULT_REMOTE_BUNDLE_SIZE,
                bundle_ms: float = DEFAULT_REMOTE_BUNDLE_MS) -> Manifest:
    """Split the workload here and send its bundles to the input queue (no S3, no Lambda)."""
    workload = Workload(path)
    workload.check()
    submitted_at = time.time()
    manifest = submit_workload(workload, job_id, submitted_at, deployment.input_queue,
                               deployment.output_queue.url, deployment.manifests, bundle_size,
                               bundle_ms, deployment.senders)
    if manifest.error:
        raise WorkloadError(path, manifest.error)
    return manifest


def collect(deployment: Deployment, job_id: str, timeout: float | None,
            on_results: Callable[[ResultBundle], None] | None = None,
            on_total: Callable[[int], None] | None = None,
            already: list[ResultBundle] | None = None) -> Collection:
    """Collect the results of ``job_id`` until every task has one, the job is cancelled,
    ``timeout`` passes or the user interrupts; ``already`` are results collected before
    (a results file resumed), which count and are not collected again."""
    try:
        outbox = deployment.output_queue
    except KeyboardInterrupt:
        return Collector.interrupted(job_id)
    collector = Collector(job_id, outbox, deployment.manifests, deployment.leases,
                          on_results=on_results, on_total=on_total,
                          exists=lambda: uploaded(deployment, job_id), already=already,
                          commands=lambda lines: workload_commands(deployment, job_id, lines))
    return collector.run(timeout)


def workload_commands(deployment: Deployment, job_id: str, lines: set[int]) -> dict[int, str]:
    """The commands on ``lines`` of the job's workload (read from S3, or from the file it
    was submitted from when it is on this machine); UsageError if it cannot be read."""
    from submitter.jobs import NotIn, job_workload

    manifest = deployment.manifests.load(job_id)
    if manifest is None:
        return {}
    return dict(job_workload(deployment, manifest.source, NotIn(lines)))


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
