"""The AWS resources of one prefix: made by `cloudkon setup` (and by a worker that finds
them missing), checked, and deleted by `cloudkon teardown`.

Each step looks first and creates only what is missing, then brings the attributes of what
exists to what they should be: running setup again is harmless.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError

from cloudkon import aws
from cloudkon.aws import call
from cloudkon.config import AwsConfig
from cloudkon.errors import AwsError, NotSetUpError
from cloudkon.limits import (
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_VISIBILITY_SECONDS,
    SPILL_RETENTION_DAYS,
    SQS_LONG_POLL_SECONDS,
    SQS_MAX_MESSAGE_BYTES,
    SQS_MAX_RETENTION_SECONDS,
)
from cloudkon.backends.dynamodb import KEY, TTL_ATTRIBUTE
from cloudkon.spill import SPILL_FOLDER

CREATED, EXISTS, UPDATED, DELETED, ABSENT = "created", "exists", "updated", "deleted", "absent"
BUCKET_KIND = "workload bucket"
_TABLE_READY_SECONDS = 180  # a new table takes seconds to become ACTIVE
_TABLE_POLL_SECONDS = 2


@dataclass(frozen=True)
class Resource:
    """One resource and what a step did to it."""

    kind: str  # "input queue", "lease table", ...
    name: str
    state: str  # created, exists, updated, deleted, absent
    detail: str = ""

    def __str__(self) -> str:
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.kind:<18} {self.name:<40} {self.state}{detail}"


def setup(config: AwsConfig, visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS,
          bucket: bool = True, update: bool = True) -> list[Resource]:
    """Create what is missing of the prefix's queues, table and (if ``bucket``) bucket;
    with ``update``, also set the attributes of queues that exist to what they should be."""
    sqs = aws.sqs_client(config)
    dlq, dlq_url = _ensure_queue(sqs, update, "dead-letter queue", config.dead_letter_queue, {
        "MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES),
        "MessageRetentionPeriod": str(SQS_MAX_RETENTION_SECONDS),
    })
    dlq_arn = call(f"queue {config.dead_letter_queue}", sqs.get_queue_attributes,
                   QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    done = [
        _ensure_queue(sqs, update, "input queue", config.input_queue, {
            "VisibilityTimeout": str(visibility_seconds),
            "ReceiveMessageWaitTimeSeconds": str(SQS_LONG_POLL_SECONDS),
            "MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                         "maxReceiveCount": DEFAULT_MAX_RECEIVE_COUNT}),
        })[0],
        dlq,
        _ensure_queue(sqs, update, "output queue", config.output_queue, {
            "ReceiveMessageWaitTimeSeconds": str(SQS_LONG_POLL_SECONDS),
            "MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES),
        })[0],
        _ensure_table(aws.dynamodb_client(config), config.lease_table),
    ]
    if bucket:
        done.append(_ensure_bucket(aws.s3_client(config), config.bucket(_account(config)),
                                   update))
    return done


def check(config: AwsConfig) -> None:
    """NotSetUpError unless the queues and the table a worker uses exist."""
    sqs = aws.sqs_client(config)
    for name in (config.input_queue, config.dead_letter_queue, config.output_queue):
        call(f"queue {name}", sqs.get_queue_url, QueueName=name)
    ddb = aws.dynamodb_client(config)
    call(f"table {config.lease_table}", ddb.describe_table, TableName=config.lease_table)


def setup_command(config: AwsConfig) -> str:
    """The `cloudkon setup` command line that makes ``config``'s deployment (in the same
    environment, so with the same region)."""
    suffix = f" --bucket-suffix {config.bucket_suffix}" if config.bucket_suffix else ""
    return f"cloudkon setup --prefix {config.prefix}{suffix}"


def not_set_up(config: AwsConfig, exc: NotSetUpError) -> NotSetUpError:
    """``exc`` (a resource of ``config``'s prefix is missing) as one line that names the
    prefix, which may be mistyped, and the setup command that makes its deployment."""
    what = exc.what or str(exc)
    return NotSetUpError(f"{what}: it does not exist; is the prefix {config.prefix!r} right? To"
                         f" make its deployment, run `{setup_command(config)}`", exc.what)


def teardown(config: AwsConfig) -> list[Resource]:
    """Delete the prefix's queues, table and bucket (with its objects); absent ones are fine."""
    sqs = aws.sqs_client(config)
    done = []
    for kind, name in (("input queue", config.input_queue),
                       ("dead-letter queue", config.dead_letter_queue),
                       ("output queue", config.output_queue)):
        url = _queue_url(sqs, name)
        if url is None:
            done.append(Resource(kind, name, ABSENT))
            continue
        call(f"delete queue {name}", sqs.delete_queue, expected=_QUEUE_MISSING, QueueUrl=url)
        done.append(Resource(kind, name, DELETED))
    ddb = aws.dynamodb_client(config)
    table = config.lease_table
    try:
        call(f"delete table {table}", ddb.delete_table, expected=("ResourceNotFoundException",),
             TableName=table)
        done.append(Resource("lease table", table, DELETED))
    except ClientError:
        done.append(Resource("lease table", table, ABSENT))
    s3 = aws.s3_client(config)
    name = config.bucket(_account(config))
    if _bucket_state(s3, name) == ABSENT:
        done.append(Resource(BUCKET_KIND, name, ABSENT))
    else:
        removed = _empty_bucket(s3, name)
        call(f"delete bucket {name}", s3.delete_bucket, Bucket=name)
        done.append(Resource(BUCKET_KIND, name, DELETED,
                             f"{removed} objects deleted" if removed else ""))
    return done


_QUEUE_MISSING = ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue")


def _queue_url(sqs, name: str) -> str | None:
    try:
        return call(f"queue {name}", sqs.get_queue_url, expected=_QUEUE_MISSING,
                    QueueName=name)["QueueUrl"]
    except ClientError:
        return None


def _ensure_queue(sqs, update: bool, kind: str, name: str,
                  attributes: dict[str, str]) -> tuple[Resource, str]:
    detail = _queue_detail(attributes)
    url = _queue_url(sqs, name)
    if url is None:
        url = call(f"create queue {name}", sqs.create_queue, QueueName=name,
                   Attributes=attributes)["QueueUrl"]
        return Resource(kind, name, CREATED, detail), url
    if not update:
        return Resource(kind, name, EXISTS), url
    current = call(f"queue {name}", sqs.get_queue_attributes, QueueUrl=url,
                   AttributeNames=list(attributes))["Attributes"]
    changed = {k: v for k, v in attributes.items() if not _same_attribute(current.get(k), v)}
    if not changed:
        return Resource(kind, name, EXISTS, detail), url
    call(f"update queue {name}", sqs.set_queue_attributes, QueueUrl=url, Attributes=changed)
    return Resource(kind, name, UPDATED, f"{detail}; changed {', '.join(sorted(changed))}"), url


def _same_attribute(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if wanted.startswith("{"):
        try:
            a, b = json.loads(current), json.loads(wanted)
        except ValueError:
            return False
        return {k: str(v) for k, v in a.items()} == {k: str(v) for k, v in b.items()}
    return current == wanted


def _queue_detail(attributes: dict[str, str]) -> str:
    parts = []
    if "VisibilityTimeout" in attributes:
        parts.append(f"visibility {attributes['VisibilityTimeout']} s")
    if "ReceiveMessageWaitTimeSeconds" in attributes:
        parts.append(f"long poll {attributes['ReceiveMessageWaitTimeSeconds']} s")
    parts.append(f"max message {int(attributes['MaximumMessageSize']) // 1024} KiB")
    if "RedrivePolicy" in attributes:
        policy = json.loads(attributes["RedrivePolicy"])
        parts.append(f"dead letters after {policy['maxReceiveCount']} receives")
    if "MessageRetentionPeriod" in attributes:
        parts.append(f"kept {int(attributes['MessageRetentionPeriod']) // 86400} days")
    return ", ".join(parts)


def _ensure_table(ddb, name: str) -> Resource:
    detail = f"on-demand, TTL on {TTL_ATTRIBUTE}"
    state = EXISTS
    try:
        call(f"table {name}", ddb.describe_table, expected=("ResourceNotFoundException",),
             TableName=name)
    except ClientError:
        try:
            call(f"create table {name}", ddb.create_table, expected=("ResourceInUseException",),
                 TableName=name, BillingMode="PAY_PER_REQUEST",
                 AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                 KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
            state = CREATED
        except ClientError:
            pass  # created by someone else just now (another worker starting)
    _wait_active(ddb, name)
    ttl = call(f"table {name}", ddb.describe_time_to_live, TableName=name)
    if ttl["TimeToLiveDescription"].get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        call(f"enable TTL on table {name}", ddb.update_time_to_live, TableName=name,
             TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
        if state == EXISTS:
            state = UPDATED
    return Resource("lease table", name, state, detail)


def _wait_active(ddb, name: str) -> None:
    """Wait until a new table is ACTIVE (seconds on AWS, at once on moto)."""
    deadline = time.monotonic() + _TABLE_READY_SECONDS
    while True:
        table = call(f"table {name}", ddb.describe_table, TableName=name)["Table"]
        if table.get("TableStatus") == "ACTIVE":
            return
        if time.monotonic() > deadline:
            raise AwsError(f"table {name} is still {table.get('TableStatus')} after"
                           f" {_TABLE_READY_SECONDS} s")
        time.sleep(_TABLE_POLL_SECONDS)


def _account(config: AwsConfig) -> str:
    return config.bucket_suffix or aws.account_id(config)


def _bucket_state(s3, name: str) -> str:
    try:
        call(f"bucket {name}", s3.head_bucket, expected=("404", "NoSuchBucket", "403"), Bucket=name)
    except ClientError as exc:
        if aws.error_code(exc) == "403":
            raise NotSetUpError(
                f"bucket {name} belongs to another account; pass --bucket-suffix to name another"
            ) from exc
        return ABSENT
    return EXISTS


def _ensure_bucket(s3, name: str, update: bool = True) -> Resource:
    if _bucket_state(s3, name) == EXISTS:
        changed = update and _ensure_spill_expiry(s3, name)
        return Resource(BUCKET_KIND, name, UPDATED if changed else EXISTS,
                        _SPILL_EXPIRY if changed else "")
    region = s3.meta.region_name
    params = {"Bucket": name}
    if region != "us-east-1":  # us-east-1 is the one region that refuses a LocationConstraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    call(f"create bucket {name}", s3.create_bucket, **params)
    _ensure_spill_expiry(s3, name)
    return Resource(BUCKET_KIND, name, CREATED, _SPILL_EXPIRY)


# The bucket's lifecycle rule that removes spilled results (cloudkon.spill).
SPILL_RULE_ID = "cloudkon-spilled-results"
_SPILL_EXPIRY = f"{SPILL_FOLDER} expires after {SPILL_RETENTION_DAYS} days"


def _ensure_spill_expiry(s3, name: str) -> bool:
    """Give the bucket the rule that expires spilled results after SPILL_RETENTION_DAYS,
    keeping its other rules; True if it had to be added or changed."""
    rule = {"ID": SPILL_RULE_ID, "Filter": {"Prefix": SPILL_FOLDER}, "Status": "Enabled",
            "Expiration": {"Days": SPILL_RETENTION_DAYS}}
    try:
        rules = call(f"lifecycle of bucket {name}", s3.get_bucket_lifecycle_configuration,
                     expected=("NoSuchLifecycleConfiguration",), Bucket=name)["Rules"]
    except ClientError:
        rules = []
    if any(r.get("ID") == SPILL_RULE_ID and r.get("Filter") == rule["Filter"]
           and r.get("Status") == "Enabled" and r.get("Expiration") == rule["Expiration"]
           for r in rules):
        return False
    rules = [r for r in rules if r.get("ID") != SPILL_RULE_ID] + [rule]
    call(f"set the lifecycle of bucket {name}", s3.put_bucket_lifecycle_configuration,
         Bucket=name, LifecycleConfiguration={"Rules": rules})
    return True


def _empty_bucket(s3, name: str) -> int:
    """Delete every object of the bucket, each version of it if the bucket keeps versions
    (and the delete markers); return how many objects (versions) were removed."""
    removed = 0
    while True:  # each listing is of what is left, so no continuation token is needed
        page = call(f"list bucket {name}", s3.list_object_versions, Bucket=name)
        versions = page.get("Versions", [])
        keys = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in versions + page.get("DeleteMarkers", [])]
        if not keys:
            return removed
        call(f"empty bucket {name}", s3.delete_objects, Bucket=name,
             Delete={"Objects": keys, "Quiet": True})
        removed += len(versions)
