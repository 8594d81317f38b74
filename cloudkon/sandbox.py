"""`cloudkon sandbox`: the whole AWS path of the remote flavour on this machine, no account.

A moto server in this process on 127.0.0.1 stands in for AWS; on it, the deployment of a
prefix (`cloudkon setup`'s queues, table and bucket); the Chalice app of ``app.py``
subscribed to the bucket as `chalice deploy` subscribes it, except that S3 sends its
events to a queue (moto delivers S3 notifications to SQS, and runs Lambdas only in
Docker), from which a thread here hands each event to the app's own handler, as the
Lambda runtime would; and N `cloudkon worker` processes. Everything it starts is pointed
at the moto server, never at AWS: the environment of this process and of the workers is
cleared of AWS settings and given the server's. Ctrl-C or SIGTERM stops it all.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cloudkon.config import AwsConfig, SandboxConfig
from cloudkon.errors import CloudKonError, UsageError
from cloudkon.limits import SANDBOX_EVENT_POLL_SECONDS, SANDBOX_STOP_SECONDS

log = logging.getLogger(__name__)

# Dummy credentials: the moto server takes any.
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox"}
# Where boto3 would otherwise find settings of a real account, emptied here.
_NO_FILES = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
             "AWS_EC2_METADATA_DISABLED": "true"}
# The Lambda's environment, as the Chalice stage sets it.
_LAMBDA_VARIABLES = ("CLOUDKON_PREFIX", "CLOUDKON_BUCKET")
_TICK = 0.1  # seconds between the main thread's looks at its flags
_INSTALL_HINT = ("the sandbox needs moto[server] and chalice: run ./scripts/cloudkon sandbox"
                 " (it installs them), or pip install -e '.[sandbox]' in a source checkout")


def exports(endpoint_url: str, region: str, prefix: str) -> dict[str, str]:
    """The environment under which `cloudkon` (and the AWS CLI, chalice) use the sandbox."""
    return {"AWS_ENDPOINT_URL": endpoint_url, "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region, **_CREDENTIALS, "CLOUDKON_PREFIX": prefix}


def isolate(environ: dict[str, str], settings: dict[str, str]) -> None:
    """Drop every AWS setting from ``environ`` (a profile, service endpoints, tokens) and
    put ``settings`` and empty configuration files in their place."""
    for name in [n for n in environ if n.startswith("AWS_")]:
        del environ[name]
    environ.update(_NO_FILES)
    environ.update(settings)


class Sandbox:
    """The moto server, the deployment, the S3 event delivery and the workers of one
    sandbox: ``start()``, then ``stop()`` (``run()`` does both around a wait for a signal)."""

    def __init__(self, config: SandboxConfig, out: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = out  # where the environment to export is printed
        self.aws = AwsConfig(prefix=config.prefix, region=config.region)
        self.endpoint_url = ""
        self.bucket = ""
        self.workers: list[subprocess.Popen] = []
        self._server = None
        self._server_thread: threading.Thread | None = None
        self._events: threading.Thread | None = None
        self._sqs = None  # the client and queue the S3 events come through
        self._events_url = ""
        self._stopping = threading.Event()
        self._signal: int | None = None  # set by the signal handler

    # --- the whole life -----------------------------------------------------------------

    def run(self) -> int:
        """Start everything, print what to export, serve until SIGINT or SIGTERM, stop
        everything; return 128 + the signal's number."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self._announce()
            while self._signal is None:
                time.sleep(_TICK)
                self._check_workers()
            log.info("%s: stopping the workers, the S3 events and the moto server",
                     signal.Signals(self._signal).name)
        finally:
            self.stop()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return 128 + self._signal

    def _on_signal(self, signum, frame) -> None:
        self._signal = signum  # only a flag: the main loop acts

    def start(self) -> None:
        """Bring up the moto server, the deployment, the event delivery and the workers."""
        app = self._load_app_modules()
        self._start_server()
        isolate(os.environ, exports(self.endpoint_url, self.config.region, self.config.prefix))
        from cloudkon import aws
        from cloudkon.backends.resources import BUCKET_KIND, setup

        done = setup(self.aws)
        for resource in done:
            log.info("%s", resource)
        self.bucket = next(r.name for r in done if r.kind == BUCKET_KIND)
        # The Lambda's environment, as `cloudkon setup` writes it into the Chalice stage.
        os.environ.update(dict(zip(_LAMBDA_VARIABLES, (self.config.prefix, self.bucket))))
        handlers = self._subscribe(app(), aws)
        self._events = threading.Thread(target=self._deliver_events, args=(handlers,),
                                        name="cloudkon-sandbox-events", daemon=True)
        self._events.start()
        self._start_workers()

    def stop(self) -> None:
        """Stop the workers (SIGINT, then SIGKILL after a while), the event delivery and the
        moto server; safe to call more than once."""
        self._stopping.set()
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # give back what it holds, exit now
        deadline = time.monotonic() + SANDBOX_STOP_SECONDS
        for proc in self.workers:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not exit in %.0f s: killed", proc.pid,
                            SANDBOX_STOP_SECONDS)
                proc.kill()
                proc.wait()
        if self._events is not None:
            self._events.join(SANDBOX_STOP_SECONDS)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(SANDBOX_STOP_SECONDS)

    # --- the pieces ---------------------------------------------------------------------

    def _load_app_modules(self) -> Callable:
        """Check that moto and chalice are there and find app.py; return what imports the
        app (later: the app reads the stage's variables when it is imported)."""
        for module in ("moto", "chalice", "flask"):
            if importlib.util.find_spec(module) is None:
                raise UsageError(f"sandbox: no module {module}: {_INSTALL_HINT}")
        path = Path(__file__).resolve().parent.parent / "app.py"
        if not path.is_file():
            raise UsageError(f"sandbox: {path} not found: the sandbox runs the Chalice app of a"
                             " source checkout; run it there")

        def load():
            spec = importlib.util.spec_from_file_location("app", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["app"] = module
            spec.loader.exec_module(module)
            return module.app

        return load

    def _start_server(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        host, port = self.config.host, self.config.port
        try:
            with socket.socket() as probe:  # werkzeug would print its own lines and exit
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"sandbox: cannot listen on {host}:{port}"
                             f" ({exc.strerror or exc}): pass another --port") from None
        self._server = make_server(host, port, DomainDispatcherApplication(create_backend_app),
                                   threaded=True, request_handler=MotoRequestHandler)
        port = self._server.server_address[1]
        self.endpoint_url = f"http://{host}:{port}"
        self._server_thread = threading.Thread(target=self._server.serve_forever,
                                               name="cloudkon-sandbox-moto", daemon=True)
        self._server_thread.start()

    def _events_queue(self) -> str:
        return f"{self.config.prefix}-sandbox-s3-events"

    def _subscribe(self, app, aws) -> dict[str, Callable]:
        """Subscribe a queue to the bucket's events for each S3 handler of the app, with the
        events and key filters the app declares; return the handlers by event source name."""
        from chalice.app import S3EventConfig

        sqs, s3 = aws.sqs_client(self.aws), aws.s3_client(self.aws)
        url = aws.call("create the S3 events queue", sqs.create_queue,
                       QueueName=self._events_queue())["QueueUrl"]
        arn = aws.call("S3 events queue", sqs.get_queue_attributes, QueueUrl=url,
                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sources = [s for s in app.event_sources if isinstance(s, S3EventConfig)]
        if not sources:
            raise UsageError("sandbox: the Chalice app in app.py has no S3 event handler")
        configurations, handlers = [], {}
        for source in sources:
            if source.bucket != self.bucket:
                raise UsageError(f"sandbox: app.py subscribes {source.name} to bucket"
                                 f" {source.bucket}, not to {self.bucket}")
            rules = [{"Name": name, "Value": value}
                     for name, value in (("prefix", source.prefix), ("suffix", source.suffix))
                     if value]
            entry = {"Id": source.name, "QueueArn": arn, "Events": list(source.events)}
            if rules:
                entry["Filter"] = {"Key": {"FilterRules": rules}}
            configurations.append(entry)
            handlers[source.name] = app.handler_map[source.name]
        aws.call(f"subscribe to the events of bucket {self.bucket}",
                 s3.put_bucket_notification_configuration, Bucket=self.bucket,
                 NotificationConfiguration={"QueueConfigurations": configurations})
        self._events_url = url
        self._sqs = sqs
        return handlers

    def _deliver_events(self, handlers: dict[str, Callable]) -> None:
        """Hand each S3 event from the queue to the handler the app registered for it, as
        the Lambda runtime does (the event, a context); one event at a time."""
        from cloudkon import aws

        while not self._stopping.is_set():
            try:
                messages = aws.call("receive S3 events", self._sqs.receive_message,
                                    QueueUrl=self._events_url, MaxNumberOfMessages=10,
                                    WaitTimeSeconds=SANDBOX_EVENT_POLL_SECONDS,
                                    VisibilityTimeout=900).get("Messages", [])
            except CloudKonError as exc:
                if not self._stopping.is_set():
                    log.error("sandbox: receiving S3 events failed: %s", exc)
                    self._stopping.wait(1.0)
                continue
            for message in messages:
                self._deliver(handlers, message["Body"])
                aws.call("delete an S3 event", self._sqs.delete_message,
                         QueueUrl=self._events_url, ReceiptHandle=message["ReceiptHandle"])

    def _deliver(self, handlers: dict[str, Callable], body: str) -> None:
        try:
            event = json.loads(body)
            records = event["Records"]
            source = records[0]["s3"]["configurationId"]
            handler = handlers[source]
        except (ValueError, KeyError, IndexError, TypeError):
            log.debug("sandbox: not an S3 event of the app's, skipped: %.200s", body)
            return  # S3's test event, for one
        key = records[0]["s3"]["object"]["key"]
        try:
            handler(event, None)
        except Exception:  # the Lambda failed: its log says why, and the sandbox goes on
            log.exception("sandbox: the Lambda %s failed on %s", source, key)

    def _start_workers(self) -> None:
        env = dict(os.environ)
        for _ in range(self.config.workers):
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "cloudkon", "worker", "--prefix", self.config.prefix,
                 "--threads", str(self.config.threads), "--no-create"],
                stdin=subprocess.DEVNULL, stdout=sys.stderr, env=env))

    def _check_workers(self) -> None:
        for proc in self.workers:
            if proc.returncode is None and proc.poll() is not None:
                log.warning("worker pid %d exited with %d; the others serve on", proc.pid,
                            proc.returncode)

    def _announce(self) -> None:
        c = self.config
        pids = ", ".join(str(p.pid) for p in self.workers)
        lines = [
            f"cloudkon sandbox: AWS stand-in (moto) at {self.endpoint_url}; prefix {c.prefix}:"
            f" queues, table, bucket {self.bucket}, the Lambda of app.py on its uploads,"
            f" {c.workers} workers of {c.threads} threads (pids {pids or 'none'})",
            "In another terminal, export this, then use the remote commands as on AWS",
            "(cloudkon submit FILE --wait, cloudkon collect JOB_ID, aws s3 ls ...):",
            "",
            "unset AWS_PROFILE AWS_SESSION_TOKEN",
            *(f"export {name}={value}"
              for name, value in exports(self.endpoint_url, c.region, c.prefix).items()),
            "",
            "Ctrl-C here stops it all; nothing is kept.",
        ]
        for line in lines:
            self.out(line)
