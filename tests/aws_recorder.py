"""A moto server that records who called what: the evidence of the least-privilege test.

    python tests/aws_recorder.py --port PORT --log CALLS.jsonl

serves moto (as ``python -m moto.server`` does) behind a WSGI layer that appends one JSON
line per AWS request to ``CALLS.jsonl``: the caller's access key id (from the SigV4
``Authorization`` header or a presigned URL, ``-`` if unsigned: the tests give each role
fake credentials of its own, so the key says which role called), the region, the service and operation as botocore names them, and
what IAM needs to authorise it: the queue, table, bucket and object, the DynamoDB items'
partition keys (``dynamodb:LeadingKeys``), an S3 read of a version. Nothing in the product
knows of it: processes reach it through AWS_ENDPOINT_URL like any endpoint.

The request is parsed as it arrives (JSON protocols: SQS, DynamoDB, SSM; query protocols:
STS, Auto Scaling, EC2, IAM; S3 in path style, which botocore uses for an IP endpoint).
:func:`tests.iam_policy.request_of` turns a record into IAM's action and resource.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.moto_server import _s3_operation, operation, serve

# The DynamoDB table's partition key attribute (cloudkon.backends.dynamodb.KEY).
PARTITION_KEY = "pk"


def access_key(environ: dict) -> str:
    """The access key id of a SigV4 request (Credential=KEY/DATE/REGION/SERVICE/...)."""
    return _scope(environ)[0]


def _scope(environ: dict) -> list[str]:
    """KEY/DATE/REGION/SERVICE of the request's signature: its Authorization header, or a
    presigned URL's X-Amz-Credential; ["-", ...] for an unsigned request."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    start = auth.find("Credential=")
    if start >= 0:
        scope = auth[start + len("Credential="):].split(",", 1)[0].split("/")
    else:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        scope = query.get("X-Amz-Credential", ["-"])[0].split("/")
    return scope + ["?"] * (4 - len(scope))


def _leading_keys(doc: dict) -> list[str]:
    """The partition keys a DynamoDB request touches (Key, Item, BatchGetItem's keys)."""
    keys = []
    for item in [doc.get("Key"), doc.get("Item")]:
        if isinstance(item, dict) and PARTITION_KEY in item:
            keys.append(next(iter(item[PARTITION_KEY].values())))
    for table in (doc.get("RequestItems") or {}).values():
        for key in table.get("Keys", ()) if isinstance(table, dict) else ():
            keys.append(next(iter(key[PARTITION_KEY].values())))
        for write in table if isinstance(table, list) else ():  # BatchWriteItem
            for request in write.values():
                item = request.get("Key") or request.get("Item") or {}
                if PARTITION_KEY in item:
                    keys.append(next(iter(item[PARTITION_KEY].values())))
    return keys


def describe(environ: dict, body: bytes) -> dict:
    """What a request asks of which resource, as a JSON-able dict."""
    key, _, region, signed_for = _scope(environ)[:4]
    service, op = operation(environ, body)
    if service == "?" and signed_for == "s3":  # a presigned URL's
        service, op = "s3", _s3_operation(environ)
    record = {"key": key, "region": region, "service": service, "operation": op}
    doc: dict = {}
    if environ.get("HTTP_X_AMZ_TARGET") and body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
    elif body and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form"):
        doc = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("latin-1")).items()}
    if service == "sqs":
        url = doc.get("QueueUrl", "")
        record["queue"] = doc.get("QueueName") or url.rstrip("/").rsplit("/", 1)[-1]
    elif service == "dynamodb":
        tables = [doc["TableName"]] if "TableName" in doc else list(doc.get("RequestItems", {}))
        record["tables"] = tables
        record["leading_keys"] = _leading_keys(doc)
    elif service == "s3":
        path = urllib.parse.unquote(environ.get("PATH_INFO", "/")).lstrip("/")
        bucket, _, obj = path.partition("/")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if not obj and "versions" in query:
            record["operation"] = "ListObjectVersions"
        # A version is named in the query, or (DeleteObjects) in the XML body.
        if "prefix" in query:
            record["prefix"] = query["prefix"][0]
        record.update(bucket=bucket, object=obj,
                      version="versionId" in query or b"<VersionId>" in body)
    elif service == "autoscaling":
        record["group"] = doc.get("AutoScalingGroupName", "")
    elif service == "ssm":
        record["names"] = [doc["Name"]] if "Name" in doc else list(doc.get("Names", ()))
    return record


class RecordingApp:
    """WSGI middleware: records every AWS request, then hands it to moto."""

    def __init__(self, app, log_path: str) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - for the server's life

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api") or (path == "/" and "HTTP_AUTHORIZATION" not in environ
                                            and environ.get("REQUEST_METHOD") == "GET"):
            return self.app(environ, start_response)  # moto's own API; the start-up probe
        body = b""
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
        line = json.dumps(describe(environ, body))
        with self._lock:  # written before moto answers: a caller that saw it, finds it
            self._log.write(line + "\n")
            self._log.flush()
        return self.app(environ, start_response)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tests/aws_recorder.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, lambda app: RecordingApp(app, args.log))


if __name__ == "__main__":
    main()
