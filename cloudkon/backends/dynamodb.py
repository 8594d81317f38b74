"""The DynamoDB lease store behind the :mod:`cloudkon.backends` lease interface.

One item per bundle, keyed ``pk``: its status (IN_PROGRESS or COMPLETED), the owner that
holds it, its record version ``rvn`` (new at every claim, heartbeat and release), how long
the owner's lease lasts from its last write (``lease_seconds``), when it expires by the
owner's clock (``lease_expires``, for people; 0 once released), the packed results of its
finished tasks, and how many claims it has had. A claim is one conditional write, never a
read and a write:

    attribute_not_exists(pk) OR (#status = :in_progress AND lease_expires = :zero)
    ... OR (#status = :in_progress AND rvn = :seen)       (a takeover)

No clock is compared across machines (as in the DynamoDB Lock Client): a claimer that
finds the key held remembers its ``rvn`` and, by its own monotonic clock, when it saw it
first; only if the version is still the same a lease's duration later does it take the key,
conditional on ``rvn = :seen``. A live owner's heartbeat changes the version in between.

It is an UpdateItem rather than a PutItem so that the finished-task results a previous
owner recorded survive a takeover (a put would replace the item and drop them); ALL_NEW
hands them to the new owner, and ReturnValuesOnConditionCheckFailure=ALL_OLD tells a
loser what it lost to, without a second read. Every later write is conditional on the
owner (a fencing token). The TTL attribute only lets DynamoDB sweep old items, up to days
late, and nothing relies on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cloudkon.aws import call
from cloudkon.backends import (
    BUSY,
    CLAIMED,
    COMPLETED,
    IN_PROGRESS,
    JOB_ACTIVE,
    JOB_CANCELLED,
    Claim,
    WorkerRecord,
)
from cloudkon.limits import (
    DYNAMODB_MAX_BATCH_GET,
    EXTEND_BUDGET_SHARE,
    LEASE_RESULTS_MAX_BYTES,
    SQS_MAX_RETENTION_SECONDS,
    WORKER_RECORD_RETENTION_SECONDS,
)
from cloudkon.model import job_key

_CHECK_FAILED = ("ConditionalCheckFailedException",)
_NAMES = {"#status": "status", "#owner": "owner"}
KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
# Set on a job's record (its manifest item, key JOB#manifest) by `cloudkon cancel`.
CANCELLED_ATTRIBUTE = "cancelled_at"


class DynamoLeaseStore:
    """Leases in the DynamoDB table ``table``; ``clock`` gives seconds since the epoch (for
    ``lease_expires``, which people read, and the TTL). Heartbeats go through
    ``beat_client`` (one with short time-outs, aws.client(beat=True)), else ``client``."""

    def __init__(self, client, table: str, clock: Callable[[], float] = time.time,
                 max_results_bytes: int = LEASE_RESULTS_MAX_BYTES,
                 retention_seconds: int = SQS_MAX_RETENTION_SECONDS,
                 beat_client=None) -> None:
        self.client = client
        self.beat_client = beat_client or client
        self.table = table
        self.clock = clock
        self.max_results_bytes = max_results_bytes
        # Items outlive any copy of their bundle still in a queue, then TTL may sweep them.
        self.retention_seconds = retention_seconds

    def claim(self, key: str, owner: str, lease_seconds: float, seen: str = "") -> Claim:
        now = self.clock()
        condition = ("attribute_not_exists(pk) OR (#status = :in_progress AND"
                     " (lease_expires = :zero")
        values = {":in_progress": {"S": IN_PROGRESS}, ":me": {"S": owner},
                  ":lease": _number(now + lease_seconds), ":ttl": self._ttl(now),
                  ":one": {"N": "1"}, ":zero": {"N": "0"}, ":rvn": _rvn(),
                  ":seconds": _number(lease_seconds)}
        if seen.startswith(_LEGACY):  # an item of a worker before record versions
            condition += " OR (attribute_not_exists(rvn) AND lease_expires = :seen)"
            values[":seen"] = {"N": seen[len(_LEGACY):]}
        elif seen:
            condition += " OR rvn = :seen"
            values[":seen"] = {"S": seen}
        try:
            response = self._update(
                f"claim bundle {key}", key,
                "SET #status = :in_progress, #owner = :me, lease_expires = :lease,"
                " lease_seconds = :seconds, rvn = :rvn, expires_at = :ttl ADD attempts :one",
                condition + "))", values, ReturnValues="ALL_NEW",
            )
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            item = exc.response.get("Item") or self._get(key)
            if item is None:  # gone in between (swept by TTL): claim it afresh
                return self.claim(key, owner, lease_seconds)
            found = _claim(item, item["status"]["S"])
            if found.outcome == COMPLETED:
                return found
            if found.owner == owner:
                # A retried claim whose first attempt did land: still this owner's.
                return found._replace(outcome=CLAIMED)
            return found._replace(outcome=BUSY)
        return _claim(response["Attributes"], CLAIMED)

    def heartbeat(self, key: str, owner: str, lease_seconds: float,
                  results: bytes | None = None) -> bool:
        now = self.clock()
        update = ("SET lease_expires = :lease, lease_seconds = :seconds, rvn = :rvn,"
                  " expires_at = :ttl")
        values = {":lease": _number(now + lease_seconds), ":ttl": self._ttl(now),
                  ":seconds": _number(lease_seconds), ":rvn": _rvn(), ":zero": {"N": "0"}}
        # Not on a released lease: a late beat (a call that hung, then landed) must not
        # take back what its owner gave up.
        return self._if_owner(f"heartbeat of bundle {key}", key, owner, update, values, results,
                              in_progress=True, client=self.beat_client,
                              budget=lease_seconds * EXTEND_BUDGET_SHARE,
                              also="lease_expires <> :zero")

    def complete(self, key: str, owner: str, results: bytes, sent_at: float = 0.0) -> bool:
        now = self.clock()
        update = ("SET #status = :completed, expires_at = :ttl, completed_at = :now,"
                  " sent_at = :sent")
        values = {":completed": {"S": COMPLETED}, ":ttl": self._ttl(now), ":now": _number(now),
                  ":sent": _number(sent_at)}
        # Conditional on the owner alone: a retry of a completion that did land succeeds.
        return self._if_owner(f"complete bundle {key}", key, owner, update, values, results,
                              in_progress=False)

    def release(self, key: str, owner: str, results: bytes | None = None) -> None:
        self._if_owner(f"release bundle {key}", key, owner,
                       "SET lease_expires = :zero, rvn = :rvn",
                       {":zero": {"N": "0"}, ":rvn": _rvn()}, results, in_progress=True)

    def lookup(self, key: str) -> Claim | None:
        item = self._get(key)
        return _claim(item, item["status"]["S"]) if item else None

    # For readers (`cloudkon status`, `retry`): not part of the lease-store interface.
    def lookup_many(self, keys: list[str]) -> dict[str, Claim]:
        """The records of those ``keys`` that exist (eventually consistent), read with
        BatchGetItem, 100 keys a call; keys DynamoDB leaves unprocessed are asked again."""
        found: dict[str, Claim] = {}
        for start in range(0, len(keys), DYNAMODB_MAX_BATCH_GET):
            pending = {self.table: {"Keys": [{KEY: {"S": k}}
                                             for k in keys[start:start + DYNAMODB_MAX_BATCH_GET]]}}
            while pending:
                response = call(f"read {len(pending[self.table]['Keys'])} leases of table"
                                f" {self.table}", self.client.batch_get_item,
                                RequestItems=pending)
                for item in response.get("Responses", {}).get(self.table, ()):
                    found[item[KEY]["S"]] = _claim(item, item["status"]["S"])
                pending = response.get("UnprocessedKeys") or {}
        return found

    def job_state(self, job_id: str) -> str:
        # Eventually consistent (half the price): workers cache the answer for seconds anyway.
        item = call(f"read the record of job {job_id}", self.client.get_item,
                    TableName=self.table, Key={KEY: {"S": job_key(job_id)}},
                    ProjectionExpression=CANCELLED_ATTRIBUTE).get("Item")
        return JOB_CANCELLED if item and CANCELLED_ATTRIBUTE in item else JOB_ACTIVE

    def _get(self, key: str) -> dict | None:
        return call(f"look up bundle {key}", self.client.get_item, TableName=self.table,
                    Key={KEY: {"S": key}}, ConsistentRead=True).get("Item")

    def _if_owner(self, what: str, key: str, owner: str, update: str, values: dict,
                  results: bytes | None, in_progress: bool, client=None,
                  budget: float | None = None, also: str = "") -> bool:
        condition = "#owner = :me" + (f" AND {also}" if also else "")
        values = {**values, ":me": {"S": owner}}
        if in_progress:
            condition += " AND #status = :in_progress"
            values[":in_progress"] = {"S": IN_PROGRESS}
        if results is not None:
            update += ", results = :results"
            values[":results"] = {"B": results}
        try:
            self._update(what, key, update, condition, values, client=client, budget=budget)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _update(self, what: str, key: str, update: str, condition: str, values: dict,
                client=None, budget: float | None = None, **extra):
        names = {n: v for n, v in _NAMES.items() if n in update or n in condition}
        client = client or self.client
        return call(what, client.update_item, expected=_CHECK_FAILED, budget=budget,
                    TableName=self.table, Key={KEY: {"S": key}}, UpdateExpression=update,
                    ConditionExpression=condition, ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD", **extra)

    def _ttl(self, now: float) -> dict:
        return {"N": str(int(now) + self.retention_seconds)}


def _number(value: float) -> dict:
    return {"N": f"{value:.6f}"}


# The version of an item written by a worker older than record versions: its lease_expires
# as written, which each of its heartbeats changed (so a fleet can be upgraded in place).
_LEGACY = "lease_expires="


def _rvn() -> dict:
    """A new record version: random, so that no two writers ever pick the same."""
    return {"S": os.urandom(8).hex()}


def _claim(item: dict, outcome: str) -> Claim:
    results = item.get("results", {}).get("B")
    return Claim(outcome, item.get("owner", {}).get("S", ""),
                 float(item.get("lease_expires", {}).get("N", "0")),
                 bytes(results) if results is not None else None,
                 int(item.get("attempts", {}).get("N", "0")),
                 float(item.get("sent_at", {}).get("N", "0")),
                 item.get("rvn", {}).get("S")
                 or _LEGACY + item.get("lease_expires", {}).get("N", "0"),
                 float(item.get("lease_seconds", {}).get("N", "0")))


# Worker registry records share the lease table under keys of their own, which start with
# "_": no job id does (it starts with a letter or digit), so no bundle key (JOB#SEQ) or
# job key (JOB#manifest) can.
WORKER_KEY_PREFIX = "_worker#"


class DynamoWorkerRegistry:
    """Worker records as items ``_worker#ID`` of the table ``table``, each put whole at every
    beat. Listing them is a Scan of the table filtered on that prefix: it reads every item
    (the bundles' leases too), so it is for operators' commands, never for a worker's loop.
    The TTL attribute lets DynamoDB sweep records ``retention_seconds`` after their last
    beat; staleness is read from ``stale_at`` in code."""

    def __init__(self, client, table: str,
                 retention_seconds: int = WORKER_RECORD_RETENTION_SECONDS) -> None:
        self.client = client
        self.table = table
        self.retention_seconds = retention_seconds

    def beat(self, record: WorkerRecord) -> None:
        item = {
            KEY: {"S": WORKER_KEY_PREFIX + record.worker_id},
            "worker_id": {"S": record.worker_id},
            "instance_id": {"S": record.instance_id},
            "threads": {"N": str(record.threads)},
            "busy": {"N": str(record.busy)},
            "tasks_done": {"N": str(record.tasks_done)},
            "version": {"S": record.version},
            "started": _number(record.started),
            "last_beat": _number(record.last_beat),
            "stale_at": _number(record.stale_at),
            TTL_ATTRIBUTE: {"N": str(int(record.last_beat) + self.retention_seconds)},
        }
        call(f"register worker {record.worker_id}", self.client.put_item, TableName=self.table,
             Item=item)

    def remove(self, worker_id: str) -> None:
        call(f"unregister worker {worker_id}", self.client.delete_item, TableName=self.table,
             Key={KEY: {"S": WORKER_KEY_PREFIX + worker_id}})

    def record(self, worker_id: str) -> WorkerRecord | None:
        item = call(f"read worker {worker_id}'s record", self.client.get_item,
                    TableName=self.table, Key={KEY: {"S": WORKER_KEY_PREFIX + worker_id}},
                    ConsistentRead=True).get("Item")
        return _worker(item) if item else None

    def workers(self) -> list[WorkerRecord]:
        records = []
        params = {"TableName": self.table, "ConsistentRead": True,
                  "FilterExpression": "begins_with(pk, :worker)",
                  "ExpressionAttributeValues": {":worker": {"S": WORKER_KEY_PREFIX}}}
        while True:
            page = call(f"list the workers in table {self.table}", self.client.scan, **params)
            records += [_worker(item) for item in page.get("Items", ())]
            if "LastEvaluatedKey" not in page:
                return sorted(records)
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _worker(item: dict) -> WorkerRecord:
    def n(name: str) -> float:
        return float(item.get(name, {}).get("N", "0"))

    return WorkerRecord(item["worker_id"]["S"], item.get("instance_id", {}).get("S", ""),
                        int(n("threads")), int(n("busy")), int(n("tasks_done")),
                        item.get("version", {}).get("S", ""), n("started"), n("last_beat"),
                        n("stale_at"))
