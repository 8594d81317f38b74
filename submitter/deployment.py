"""The AWS resources of one prefix as the backends the submitter and the collector use.

Clients are made when first wanted, never at import time, from the
:class:`~cloudkon.config.AwsConfig` (whose endpoint and region may be left to boto3, so
AWS_ENDPOINT_URL points everything at a stand-in such as the moto server).
"""

from __future__ import annotations

import functools

from cloudkon import aws
from cloudkon.backends.dynamodb import DynamoLeaseStore, DynamoWorkerRegistry
from cloudkon.backends.s3spill import S3SpillStore
from cloudkon.backends.sqs import SqsBroker, SqsQueue
from cloudkon.codec import WireCodec
from cloudkon.config import AwsConfig
from cloudkon.limits import DEFAULT_SENDERS, SQS_MAX_BATCH
from cloudkon.signing import load_signer
from submitter.manifest import DynamoManifests

# Where uploaded workloads go in the bucket, and what the Lambda listens to:
# workloads/JOB_ID/FILE NAME.
WORKLOADS_PREFIX = "workloads/"


class Deployment:
    """The queues, lease table, manifests and bucket named by ``config``'s prefix."""

    def __init__(self, config: AwsConfig, senders: int = DEFAULT_SENDERS,
                 batch_size: int = SQS_MAX_BATCH) -> None:
        self.config = config
        self.senders = senders
        self.batch_size = batch_size  # messages per SQS call: sends and receives

    @functools.cached_property
    def codec(self) -> WireCodec:
        """How bodies and stored results are made and read: signed and checked if the
        configuration names a signing key (read once, at the first use); pointers to
        results spilled to the workload bucket followed."""
        return WireCodec(signer=load_signer(self.config.signing_key, self.config),
                         spill=S3SpillStore(lambda: self.s3, lambda: self.bucket))

    @functools.cached_property
    def broker(self) -> SqsBroker:
        return SqsBroker(aws.sqs_client(self.config, max_connections=self.senders + 2),
                         self.batch_size)

    @functools.cached_property
    def input_queue(self) -> SqsQueue:
        return self.broker.queue(self.config.input_queue)

    @functools.cached_property
    def output_queue(self) -> SqsQueue:
        return self.broker.queue(self.config.output_queue)

    @functools.cached_property
    def _dynamodb(self):
        return aws.dynamodb_client(self.config)

    @functools.cached_property
    def leases(self) -> DynamoLeaseStore:
        return DynamoLeaseStore(self._dynamodb, self.config.lease_table)

    @functools.cached_property
    def workers(self) -> DynamoWorkerRegistry:
        return DynamoWorkerRegistry(self._dynamodb, self.config.lease_table)

    @functools.cached_property
    def manifests(self) -> DynamoManifests:
        return DynamoManifests(self._dynamodb, self.config.lease_table)

    @functools.cached_property
    def s3(self):
        return aws.s3_client(self.config)

    @functools.cached_property
    def bucket(self) -> str:
        """The workload bucket's name (one STS call for the account id, unless a suffix names it)."""
        return self.config.bucket(self.config.bucket_suffix or aws.account_id(self.config))
