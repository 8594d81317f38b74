"""Spilled payloads in the workload bucket (cloudkon.spill), under ``spill/JOB/``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from cloudkon.aws import call
from cloudkon.errors import SpillError
from cloudkon.spill import check_bucket, check_pointer, spill_key, verified

log = logging.getLogger(__name__)

_GONE = ("NoSuchKey", "404")


class S3SpillStore:
    """Spills to one bucket. The S3 client (from ``client``, a function) and the bucket's
    name (from ``bucket``, a function or the name) are made at first use: a process that
    never spills makes neither (a name may cost an STS call for the account id)."""

    def __init__(self, client: Callable[[], Any], bucket: str | Callable[[], str]) -> None:
        self._client = client
        self._bucket = bucket
        self._lock = threading.Lock()

    @property
    def client(self):
        with self._lock:
            if not hasattr(self, "_made"):
                self._made = self._client()
            return self._made

    @property
    def bucket(self) -> str:
        with self._lock:
            if callable(self._bucket):
                self._bucket = self._bucket()
            return self._bucket

    def put(self, job_id: str, what: str, data: bytes) -> dict:
        key, digest = spill_key(job_id, what, data)
        bucket = self.bucket
        call(f"spill {len(data)} bytes to s3://{bucket}/{key}", self.client.put_object,
             Bucket=bucket, Key=key, Body=data, ContentType="application/octet-stream")
        log.info("job %s: spilled %s (%d bytes) to s3://%s/%s", job_id, what, len(data),
                 bucket, key, extra={"job_id": job_id})
        return {"bucket": bucket, "key": key, "size": len(data), "sha256": digest}

    def get(self, pointer: dict) -> bytes:
        pointer = check_bucket(check_pointer(pointer), self.bucket)
        where = f"s3://{pointer['bucket']}/{pointer['key']}"
        try:
            answer = call(f"read spilled results {where}", self.client.get_object,
                          expected=_GONE, Bucket=pointer["bucket"], Key=pointer["key"])
            data = answer["Body"].read()
        except ClientError:
            raise SpillError(f"spilled results {where} are gone (removed, or expired by the"
                             " bucket's lifecycle rule)") from None
        return verified(pointer, data)

    def delete(self, pointer: dict) -> None:
        pointer = check_bucket(check_pointer(pointer), self.bucket)
        call(f"delete spilled results s3://{pointer['bucket']}/{pointer['key']}",
             self.client.delete_object, Bucket=pointer["bucket"], Key=pointer["key"])
