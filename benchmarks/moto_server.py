"""A moto server that counts the requests it answers: the AWS of the comparison runs and of
the tests (tests/aws_fixtures.py).

    python -m benchmarks.moto_server [--host 127.0.0.1] --port PORT

serves moto (every AWS service it mocks, as ``python -m moto.server`` does) and counts
each request by service and operation, with its request and response payload sizes, so
that every contender is counted the same way, whatever its client: botocore's events see
CloudKon's requests, but not those Celery's SQS transport sends through pycurl. The
counts are read with ``GET /_cloudkon/requests`` and zeroed with
``POST /_cloudkon/requests/reset``. :class:`MotoServer` starts one as a subprocess.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.harness import child_env
from benchmarks.prices import billed_units, cost

COUNTS_PATH = "/_cloudkon/requests"
START_SECONDS = 60.0
REGION = "us-east-1"

# X-Amz-Target prefixes of the JSON protocols, by service.
_TARGET_SERVICES = {"AmazonSQS": "sqs", "DynamoDB_20120810": "dynamodb"}


def _credential_service(environ: dict) -> str:
    """The service named in the request's SigV4 credential scope (KEY/DATE/REGION/SERVICE/...)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    start = auth.find("Credential=")
    if start < 0:
        return "?"
    scope = auth[start + len("Credential="):].split(",", 1)[0].split("/")
    return scope[3] if len(scope) > 3 else "?"


def _s3_operation(environ: dict) -> str:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/").strip("/")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if "/" in path:  # /bucket/key
        return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject",
                "DELETE": "DeleteObject", "POST": "PostObject"}.get(method, method)
    if "lifecycle" in query:
        return {"GET": "GetBucketLifecycleConfiguration",
                "PUT": "PutBucketLifecycleConfiguration"}.get(method, method)
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else (
            "ListBuckets" if not path else "ListObjects")
    if method == "PUT":
        return "PutBucketNotificationConfiguration" if "notification" in query else "CreateBucket"
    return {"HEAD": "HeadBucket", "DELETE": "DeleteBucket", "POST": "DeleteObjects"}.get(
        method, method)


def operation(environ: dict, body: bytes) -> tuple[str, str]:
    """(service, operation) of an AWS request, as botocore names them."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, name = target.partition(".")
        return _TARGET_SERVICES.get(prefix, _credential_service(environ)), name
    service = _credential_service(environ)
    action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    if not action and body and b"Action=" in body[:4096]:
        action = urllib.parse.parse_qs(body.decode("latin-1")).get("Action")
    if action:
        return service, action[0]
    if service == "s3":
        return service, _s3_operation(environ)
    return service, environ.get("REQUEST_METHOD", "?")


class CountingApp:
    """WSGI middleware: counts every AWS request that passes, then hands it to moto.
    DynamoDB requests are handed over one at a time: DynamoDB applies a conditional write to
    an item atomically, moto's threaded server does not (two conditional claims of one
    absent key, arriving within milliseconds, both succeed on moto)."""

    def __init__(self, app) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._dynamodb = threading.Lock()
        self.requests: Counter = Counter()
        self.units: Counter = Counter()
        self.request_bytes = 0
        self.response_bytes = 0

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(COUNTS_PATH):
            return self._serve_counts(environ, start_response)
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        body = b""
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
        service, op = operation(environ, body)
        if service == "dynamodb":
            with self._dynamodb:
                out = self._answer(environ, start_response)
        else:
            out = self._answer(environ, start_response)
        sent = sum(map(len, out))
        key = f"{service}:{op}"
        units = billed_units(service, op, len(body), sent)
        with self._lock:
            self.requests[key] += 1
            if units:
                self.units[key] += units
            self.request_bytes += len(body)
            self.response_bytes += sent
        return out

    def _answer(self, environ: dict, start_response) -> list[bytes]:
        chunks = self.app(environ, start_response)
        try:
            return list(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": dict(self.requests), "units": dict(self.units),
                    "request_bytes": self.request_bytes, "response_bytes": self.response_bytes}

    def _serve_counts(self, environ: dict, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            with self._lock:
                self.requests.clear()
                self.units.clear()
                self.request_bytes = self.response_bytes = 0
        payload = json.dumps(self.snapshot()).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(payload)))])
        return [payload]


def serve(host: str, port: int, wrap: Callable) -> None:
    """Serve moto's app, wrapped by ``wrap`` (a WSGI middleware), on ``host``:``port``
    until SIGTERM."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(port))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server(host, port, wrap(DomainDispatcherApplication(create_backend_app)),
                         threaded=True, request_handler=MotoRequestHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.moto_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, CountingApp)


# --------------------------------------------------------------------------- the client side


@dataclass
class RequestCounts:
    """What a moto server answered between two readings."""

    requests: Counter = field(default_factory=Counter)  # "service:Operation" -> requests
    units: Counter = field(default_factory=Counter)  # "service:Operation" -> billed units

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def dollars(self) -> float:
        return cost(self.units)


def read_counts(url: str) -> RequestCounts:
    """What the counting moto server at ``url`` has answered since its last reset."""
    with urllib.request.urlopen(url + COUNTS_PATH, timeout=10) as r:
        doc = json.load(r)
    return RequestCounts(Counter(doc["requests"]), Counter(doc["units"]))


def reset_counts(url: str) -> None:
    req = urllib.request.Request(url + COUNTS_PATH + "/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """A counting moto server in a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, log_path: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.moto_server", "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                self.counts()
                return self
            except OSError:
                pass
            if self._proc.poll() is not None:
                raise RuntimeError(f"the moto server exited with {self._proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the moto server did not answer within {START_SECONDS:g} s")
            time.sleep(0.1)

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and every subprocess) at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}

    def counts(self) -> RequestCounts:
        return read_counts(self.url)

    def reset(self) -> None:
        reset_counts(self.url)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    main()
