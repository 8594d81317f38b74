"""Published AWS request prices, as named constants with their date, and the cost of a run.

US East (N. Virginia), on-demand, after the free tiers, as published by AWS and checked
on PRICES_CHECKED. Prices change: update them, and the date, together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PRICES_CHECKED = "2026-11-25"
PRICES_REGION = "us-east-1"

# SQS standard queue: per request, where each 64 KiB chunk of a request's payload counts
# as one request ($0.40 per million, first 100 billion a month).
SQS_PER_REQUEST = 0.40 / 1e6
SQS_BILLING_CHUNK_BYTES = 64 * 1024
# DynamoDB on-demand, standard table class ($0.625 per million write request units and
# $0.125 per million read request units since 2024-11-01). A write unit is 1 KB of item
# written; a strongly consistent read unit is 4 KB read.
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1e6
DYNAMODB_PER_READ_UNIT = 0.125 / 1e6
DYNAMODB_WRITE_UNIT_BYTES = 1024
DYNAMODB_READ_UNIT_BYTES = 4096
# S3 Standard: PUT, COPY, POST and LIST $0.005 per 1,000; GET and the rest $0.0004 per 1,000.
S3_PER_WRITE_REQUEST = 0.005 / 1000
S3_PER_READ_REQUEST = 0.0004 / 1000

_DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem",
                    "TransactWriteItems"}
_DYNAMODB_READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
_S3_WRITES = {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2",
              "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListBuckets"}


def billed_units(service: str, operation: str, request_bytes: int, response_bytes: int) -> float:
    """How many priced units one request is, estimated from its HTTP payload sizes.

    SQS bills each 64 KiB chunk of a request's payload (a batch of ten small messages is
    one request; a receive that returns 200 KiB is four). DynamoDB bills by item size: a
    write is estimated from the request (which carries the item or the update), a read
    from the response. Control-plane calls (CreateQueue, DescribeTable, ...) are free.
    """
    if service == "sqs":
        return max(1, math.ceil(max(request_bytes, response_bytes) / SQS_BILLING_CHUNK_BYTES))
    if service == "dynamodb":
        if operation in _DYNAMODB_WRITES:
            return max(1, math.ceil(request_bytes / DYNAMODB_WRITE_UNIT_BYTES))
        if operation in _DYNAMODB_READS:
            return max(1, math.ceil(response_bytes / DYNAMODB_READ_UNIT_BYTES))
        return 0
    if service == "s3":
        return 1
    return 0


def unit_price(service: str, operation: str) -> float:
    """Dollars per billed unit of ``operation`` (0 for free control-plane calls)."""
    if service == "sqs":
        return SQS_PER_REQUEST
    if service == "dynamodb":
        if operation in _DYNAMODB_WRITES:
            return DYNAMODB_PER_WRITE_UNIT
        if operation in _DYNAMODB_READS:
            return DYNAMODB_PER_READ_UNIT
        return 0.0
    if service == "s3":
        return S3_PER_WRITE_REQUEST if operation in _S3_WRITES else S3_PER_READ_REQUEST
    return 0.0


def cost(units: Mapping[str, float]) -> float:
    """Dollars for ``units`` keyed "service:Operation" (as counted by the moto server)."""
    total = 0.0
    for key, n in units.items():
        service, _, operation = key.partition(":")
        total += n * unit_price(service, operation)
    return total
