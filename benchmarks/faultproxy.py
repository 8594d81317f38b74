"""A fault-injecting HTTP proxy between AWS clients and a moto server.

    python -m benchmarks.faultproxy --upstream http://127.0.0.1:MOTO_PORT [--port PORT]
        [--seed 7] [--rate error=0.02 --rate throttle=0.02 --rate unanswered=0.02
        --rate hang=0.005] [--hang-seconds 5] [--sweep] [--only OP ...] [--stats FILE]
    python -m benchmarks.faultproxy --moto ...     # starts a moto server of its own

It listens on 127.0.0.1, prints ``AWS_ENDPOINT_URL=http://127.0.0.1:PORT``, and forwards
every request to the upstream. Processes reach it the standard way (``AWS_ENDPOINT_URL`` or
``--endpoint-url``): nothing in the product knows it is there. For each request it names
the AWS operation (``X-Amz-Target`` of the JSON protocols: DynamoDB, SQS; ``Action=`` of
the query protocol; S3 by method and path) and, by a seeded schedule, injects one of:

- ``error``: answers 500 InternalError, in the protocol's error shape (not forwarded);
- ``throttle``: answers 503 throttling (ThrottlingException, Throttling, SlowDown);
- ``unanswered``: forwards the call (it takes effect), then closes the connection without
  answering: "done but unanswered";
- ``hang``: holds the call ``--hang-seconds`` (set it longer than the lease under test),
  then either forwards it and relays the answer (a late answer, or a call that lands after
  its client gave up), or closes the connection without forwarding.

The decision for the n-th call of an operation depends only on the seed, the operation and
n, so a run is reproducible up to the order in which threads make their calls. ``--sweep``
makes every operation meet each fault kind in its first calls (calls 0, 2, 4, 6), then the
rates apply. What was injected is counted per operation: ``GET /_faultproxy/stats`` on the
proxy, ``--stats FILE`` at exit, or :meth:`FaultProxy.stats` in process. Requests to
``/moto-api`` pass unharmed.

DynamoDB calls are forwarded one at a time (by all proxies of a process): DynamoDB applies each write to an item
atomically, conditions included, but moto's threaded server does not (two conditional
claims of one absent key, arriving within milliseconds, both succeed on moto). Without
this, a hung claim released just as another worker claims the same bundle shows a double
claim that AWS would never make.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.moto_server import operation

ERROR, THROTTLE, UNANSWERED, HANG = "error", "throttle", "unanswered", "hang"
KINDS = (ERROR, THROTTLE, UNANSWERED, HANG)
STATS_PATH = "/_faultproxy/stats"
UPSTREAM_TIMEOUT_SECONDS = 60.0  # a moto server that does not answer by then is broken
# Headers of one hop, never passed on (RFC 9110 7.6.1); lengths are set anew.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                          "transfer-encoding", "upgrade", "content-length"})
# The error codes each protocol uses for a server error and for throttling.
_JSON_CODES = {
    "dynamodb": {ERROR: "com.amazonaws.dynamodb.v20120810#InternalServerError",
                 THROTTLE: "com.amazonaws.dynamodb.v20120810#ThrottlingException"},
    "sqs": {ERROR: "com.amazonaws.sqs#InternalError", THROTTLE: "com.amazonaws.sqs#ThrottlingException"},
}
_QUERY_CODES = {ERROR: "InternalError", THROTTLE: "Throttling"}
_S3_CODES = {ERROR: "InternalError", THROTTLE: "SlowDown"}
_STATUS = {ERROR: 500, THROTTLE: 503}
# Held while a DynamoDB call is forwarded, by every proxy of this process: DynamoDB's
# per-item atomicity, which moto lacks.
_DYNAMODB_LOCK = threading.Lock()


@dataclass(frozen=True)
class Schedule:
    """Which fault, if any, the n-th call of an operation gets."""

    rates: Mapping[str, float] = field(default_factory=dict)  # kind -> share of calls
    seed: int = 0
    sweep: bool = False  # every operation meets each kind in its calls 0, 2, 4, 6
    hang_seconds: float = 5.0
    only: frozenset[str] = frozenset()  # operations ("UpdateItem"); empty: every one

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if sum(self.rates.values()) > 1 or any(r < 0 for r in self.rates.values()):
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1: {dict(self.rates)}")

    def fault(self, op: str, n: int) -> str | None:
        """The fault kind of call ``n`` (from 0) of operation ``op``, or None."""
        if self.only and op not in self.only:
            return None
        if self.sweep and n < 2 * len(KINDS):
            return None if n % 2 else KINDS[n // 2]
        x = random.Random(f"{self.seed}:{op}:{n}").random()
        for kind in KINDS:
            x -= self.rates.get(kind, 0.0)
            if x < 0:
                return kind
        return None

    def forward_after_hang(self, op: str, n: int) -> bool:
        """Whether a held call is forwarded in the end (else dropped unforwarded)."""
        return random.Random(f"{self.seed}:{op}:{n}:hang").random() < 0.5


class FaultProxy:
    """The proxy in threads of this process: ``with FaultProxy(url, schedule) as p:``, then
    point clients at ``p.url``."""

    def __init__(self, upstream: str, schedule: Schedule, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.schedule = schedule
        self._lock = threading.Lock()
        self._calls: Counter = Counter()  # operation -> calls seen
        self._injected: dict[str, Counter] = {}  # operation -> kind -> faults injected
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # held calls end now
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def decide(self, op: str) -> tuple[int, str | None]:
        """Count a call of ``op``; its number and the fault it gets."""
        with self._lock:
            n = self._calls[op]
            self._calls[op] += 1
            kind = self.schedule.fault(op, n)
            if kind:
                self._injected.setdefault(op, Counter())[kind] += 1
        return n, kind

    def hold(self) -> None:
        self._stopping.wait(self.schedule.hang_seconds)

    def stats(self) -> dict:
        """{"calls": {op: n}, "injected": {op: {kind: n}}, "totals": {kind: n}}."""
        with self._lock:
            injected = {op: dict(kinds) for op, kinds in sorted(self._injected.items())}
            calls = dict(sorted(self._calls.items()))
        totals: Counter = Counter()
        for kinds in injected.values():
            totals.update(kinds)
        return {"calls": calls, "injected": injected, "totals": dict(totals)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pools expect
    server_version = "faultproxy"
    _upstream: http.client.HTTPConnection | None = None
    _serial = False  # the call in hand is forwarded under _DYNAMODB_LOCK

    def log_message(self, format: str, *args) -> None:  # one line per call is noise
        pass

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        if self.path.startswith(STATS_PATH):
            self._answer(200, [("Content-Type", "application/json")],
                         json.dumps(self.proxy.stats()).encode())
            return
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = lambda self: self._handle()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        try:
            self._inject(self._body())
        except (http.client.HTTPException, OSError):  # the upstream is gone (stopping)
            self.close_connection = True

    def _inject(self, body: bytes) -> None:
        split = urllib.parse.urlsplit(self.path)
        if split.path.startswith("/moto-api"):
            self._relay(self._forward(body))
            return
        environ = {"REQUEST_METHOD": self.command, "PATH_INFO": split.path,
                   "QUERY_STRING": split.query,
                   "HTTP_X_AMZ_TARGET": self.headers.get("X-Amz-Target", ""),
                   "HTTP_AUTHORIZATION": self.headers.get("Authorization", "")}
        service, op = operation(environ, body)
        self._serial = service == "dynamodb"
        n, kind = self.proxy.decide(op)
        if kind in (ERROR, THROTTLE):
            self._answer(*_error(service, environ["HTTP_X_AMZ_TARGET"], kind, op))
        elif kind == UNANSWERED:
            self._forward(body)
            self.close_connection = True
        elif kind == HANG:
            self.proxy.hold()
            if self.proxy.schedule.forward_after_hang(op, n):
                self._relay(self._forward(body))
            else:
                self.close_connection = True
        else:
            self._relay(self._forward(body))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.proxy.upstream,
                                                            timeout=UPSTREAM_TIMEOUT_SECONDS)
            try:
                if self._serial:
                    with _DYNAMODB_LOCK:
                        return self._exchange(body, headers)
                return self._exchange(body, headers)
            except (http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, body: bytes, headers: dict[str, str]
                  ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        self._upstream.request(self.command, self.path, body, headers)
        response = self._upstream.getresponse()
        return response.status, response.reason, response.getheaders(), response.read()

    def _relay(self, response: tuple[int, str, list[tuple[str, str]], bytes]) -> None:
        status, reason, headers, data = response
        if self.command == "HEAD":  # no body, but the length of the object, as upstream says
            kept = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS - {"content-length"}]
            self._write(status, reason, kept, b"")
            return
        self._answer(status, [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS], data,
                     reason)

    def _answer(self, status: int, headers: Iterable[tuple[str, str]], data: bytes,
                reason: str | None = None) -> None:
        self._write(status, reason, [*headers, ("Content-Length", str(len(data)))], data)

    def _write(self, status: int, reason: str | None, headers: Iterable[tuple[str, str]],
               data: bytes) -> None:
        try:
            self.send_response_only(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a held call)
            self.close_connection = True

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # the client died (kill -9)
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:  # the client died before the last bytes were flushed
            pass
        finally:
            if self._upstream is not None:
                self._upstream.close()


def _error(service: str, target: str, kind: str, op: str
           ) -> tuple[int, list[tuple[str, str]], bytes]:
    """An error answer as the service would give it: status, headers, body."""
    status = _STATUS[kind]
    message = f"injected by faultproxy ({kind}, {op})"
    request_id = str(uuid.uuid4())
    if target:  # the JSON protocols (DynamoDB, SQS)
        code = _JSON_CODES.get(service, _JSON_CODES["sqs"])[kind]
        body = json.dumps({"__type": code, "message": message}).encode()
        return status, [("Content-Type", "application/x-amz-json-1.0"),
                        ("x-amzn-RequestId", request_id)], body
    if service == "s3":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{_S3_CODES[kind]}</Code>"
                f"<Message>{message}</Message><RequestId>{request_id}</RequestId></Error>")
        return status, [("Content-Type", "application/xml")], body.encode()
    body = (f"<ErrorResponse><Error><Type>Receiver</Type><Code>{_QUERY_CODES[kind]}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>")
    return status, [("Content-Type", "text/xml")], body.encode()


def read_stats(url: str) -> dict:
    """What the proxy at ``url`` has injected so far (its ``/_faultproxy/stats``)."""
    import urllib.request

    with urllib.request.urlopen(url + STATS_PATH, timeout=10) as r:
        return json.load(r)


def _rate(text: str) -> tuple[str, float]:
    kind, sep, value = text.partition("=")
    if not sep or kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND=SHARE, KIND one of"
                                         f" {', '.join(KINDS)}")
    try:
        return kind, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faultproxy",
        description="Forward AWS calls to a moto server, injecting 500s, 503 throttling,"
                    " done-but-unanswered calls and hung calls by a seeded schedule.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--upstream", metavar="URL", help="the moto server to forward to")
    where.add_argument("--moto", action="store_true", help="start a moto server of its own")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: free)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=_rate, action="append", default=[], metavar="KIND=SHARE",
                        help=f"share of calls that get KIND ({', '.join(KINDS)}); repeatable")
    parser.add_argument("--hang-seconds", type=float, default=5.0,
                        help="how long a hung call is held (longer than the lease under test)")
    parser.add_argument("--sweep", action="store_true",
                        help="every operation meets each fault kind in its first calls")
    parser.add_argument("--only", nargs="+", default=[], metavar="OP",
                        help="inject only into these operations (UpdateItem, ReceiveMessage...)")
    parser.add_argument("--stats", metavar="FILE", help="write what was injected here at exit")
    args = parser.parse_args(argv)
    try:
        schedule = Schedule(dict(args.rate), args.seed, args.sweep, args.hang_seconds,
                            frozenset(args.only))
    except ValueError as exc:
        parser.error(str(exc))
    moto = None
    if args.moto:
        from benchmarks.moto_server import MotoServer

        moto = MotoServer().start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with FaultProxy(args.upstream or moto.url, schedule, port=args.port) as proxy:
            print(f"AWS_ENDPOINT_URL={proxy.url}", flush=True)
            while not stop.wait(1.0):
                pass
            stats = proxy.stats()
    finally:
        if moto is not None:
            moto.stop()
    text = json.dumps(stats, indent=1)
    if args.stats:
        with open(args.stats, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
