"""Spilled payloads: what does not fit a message or a lease item goes to the workload
bucket, and a small pointer takes its place (the SQS Extended Client's pattern).

A pointer is ``{"bucket": ..., "key": ..., "size": N, "sha256": "..."}``; its key is
``spill/JOB/WHAT-SHA256`` (content-addressed: an object is never overwritten, so a pointer
never sees another payload than the one it was made for). A reader checks the size and
the digest, so a payload that changed or was cut is refused, never used.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from cloudkon.errors import SpillError

SPILL_FOLDER = "spill/"  # the bucket's folder of spilled objects, with its lifecycle rule


def spill_key(job_id: str, what: str, data: bytes) -> tuple[str, str]:
    """The object key of ``data`` spilled as ``what`` of job ``job_id``, and its SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{SPILL_FOLDER}{job_id}/{what}-{digest}", digest


def job_folder(job_id: str) -> str:
    """The folder of a job's spilled objects (removed with the job)."""
    return f"{SPILL_FOLDER}{job_id}/"


def check_pointer(pointer: object) -> dict:
    """``pointer`` if it is a well-formed pointer; SpillError naming what is wrong if not."""
    if (not isinstance(pointer, dict) or not isinstance(pointer.get("bucket"), str)
            or not isinstance(pointer.get("key"), str)
            or not str(pointer.get("key")).startswith(SPILL_FOLDER)
            or not isinstance(pointer.get("size"), int) or isinstance(pointer.get("size"), bool)
            or not isinstance(pointer.get("sha256"), str)):
        raise SpillError(f"malformed spill pointer {str(pointer)[:200]}")
    return pointer


def check_bucket(pointer: dict, bucket: str) -> dict:
    """``pointer`` if it points into ``bucket`` (the deployment's); SpillError if not: a
    pointer never makes a reader fetch from elsewhere."""
    if pointer["bucket"] != bucket:
        raise SpillError(f"spill pointer to bucket {pointer['bucket'][:80]!r}, not to this"
                         f" deployment's {bucket}")
    return pointer


def verified(pointer: dict, data: bytes) -> bytes:
    """``data`` if it is what ``pointer`` points to; SpillError if its size or digest differ."""
    where = f"s3://{pointer['bucket']}/{pointer['key']}"
    if len(data) != pointer["size"]:
        raise SpillError(f"spilled results {where} hold {len(data)} bytes, not"
                         f" {pointer['size']}")
    if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
        raise SpillError(f"spilled results {where} do not match their SHA-256")
    return data


class SpillStore(Protocol):
    """Where spilled payloads go (the workload bucket, cloudkon.backends.s3spill)."""

    def put(self, job_id: str, what: str, data: bytes) -> dict:
        """Store ``data`` as ``what`` of job ``job_id``; return the pointer to it."""
        ...

    def get(self, pointer: dict) -> bytes:
        """The payload ``pointer`` points to, checked; SpillError if gone or not it."""
        ...

    def delete(self, pointer: dict) -> None:
        """Remove the payload ``pointer`` points to (absent is fine)."""
        ...
