"""The worker daemon on AWS: its SQS queues, DynamoDB lease table and worker registry (in
the same table), and its EMF metrics, from a deployment's configuration. What ``cloudkon
worker`` runs; the loop itself (worker/daemon.py) never sees boto3."""

from __future__ import annotations

import logging

from cloudkon import aws, logs
from cloudkon.backends import resources
from cloudkon.backends.dynamodb import DynamoLeaseStore, DynamoWorkerRegistry
from cloudkon.backends.s3spill import S3SpillStore
from cloudkon.backends.sqs import SqsBroker
from cloudkon.codec import WireCodec
from cloudkon.config import AwsConfig, WorkerConfig
from cloudkon.errors import NotSetUpError
from cloudkon.limits import HEARTBEAT_MAX_CONCURRENT
from cloudkon.metrics import EmfMetrics
from cloudkon.signing import SIGNING_KEY_VARIABLE, load_signer
from worker.daemon import Worker

log = logging.getLogger(__name__)

# Connections each client keeps besides one per bundle thread: the receiver, the heartbeat
# and a spare.
_EXTRA_CONNECTIONS = 4


def aws_worker(deployment: AwsConfig, config: WorkerConfig, batch_size: int,
               create: bool = True) -> Worker:
    """A worker serving ``deployment``'s input queue. With ``create``, queues and table that
    are missing are created first (as the original design's worker does); without,
    NotSetUpError names what is missing. The signing key, if named, is read first (a key
    that cannot be read is a UsageError); without one, a warning says so."""
    signer = load_signer(deployment.signing_key, deployment, config.replay_window_seconds)
    if create:
        for resource in resources.setup(deployment, config.visibility_seconds, bucket=False,
                                        update=False):
            if resource.state == resources.CREATED:
                log.warning("%s %s did not exist: created, as for a new deployment of prefix %r"
                            " (mistyped? --no-create refuses instead)", resource.kind,
                            resource.name, deployment.prefix)
            elif resource.state != resources.EXISTS:
                log.info("%s", resource)
    else:
        try:
            resources.check(deployment)
        except NotSetUpError as exc:
            raise resources.not_set_up(deployment, exc) from None
    if signer is None:  # said once the deployment is known to be there
        log.warning("no signing key configured (--signing-key, %s): bundles are run unchecked,"
                    " whoever sent them, and results are not signed", SIGNING_KEY_VARIABLE)
    connections = config.threads + _EXTRA_CONNECTIONS
    # The heartbeat's calls go through clients of their own, with short time-outs.
    beats = min(config.threads, HEARTBEAT_MAX_CONCURRENT) + _EXTRA_CONNECTIONS
    broker = SqsBroker(aws.sqs_client(deployment, connections), batch_size,
                       beat_client=aws.sqs_client(deployment, beats, beat=True))
    inbox = broker.queue(deployment.input_queue, dead_letter=deployment.dead_letter_queue)
    dynamodb = aws.dynamodb_client(deployment, connections)
    leases = DynamoLeaseStore(dynamodb, deployment.lease_table,
                              beat_client=aws.dynamodb_client(deployment, beats, beat=True))
    registry = DynamoWorkerRegistry(dynamodb, deployment.lease_table)
    metrics = (EmfMetrics(logs.metrics_writer(), deployment.input_queue, config.worker_id)
               if config.emf_metrics else None)
    # Results too large for a message or a lease item spill to the workload bucket, whose
    # name (an STS call for the account id) is looked up at the first spill.
    spill = S3SpillStore(lambda: aws.s3_client(deployment), lambda: deployment.bucket(
        deployment.bucket_suffix or aws.account_id(deployment)))
    codec = WireCodec(worker_threads=config.threads, signer=signer, spill=spill)
    return Worker(inbox, broker, leases, config, codec=codec, registry=registry,
                  metrics=metrics)
