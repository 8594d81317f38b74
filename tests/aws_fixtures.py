"""AWS without AWS: the moto server, and fixtures and helpers on top of it.

``moto_server`` starts a moto server (``python -m benchmarks.moto_server``: moto.server's
app, DynamoDB calls one at a time) on 127.0.0.1 and a free
port once per session and points boto3 at it the standard way (AWS_ENDPOINT_URL, fake
credentials, AWS_DEFAULT_REGION), for the tests and every subprocess they start. Each
test names its resources with a prefix of its own. Registered in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudkon.config import AwsConfig

REGION = "us-east-1"
_ROOT = Path(__file__).resolve().parent.parent  # benchmarks/ is importable from here
MOTO_START_SECONDS = 60.0  # a moto server that does not answer by then is broken


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    """True once anything answers HTTP at ``url`` (an error status is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Iterator[str]:
    """The URL of a moto server that stands in for AWS for this session."""
    # moto's own server, with DynamoDB's per-item atomicity, which moto lacks: conditional
    # claims of one key sent at once both succeeded on plain moto.
    with aws_server(lambda port: [sys.executable, "-m", "benchmarks.moto_server", "--host",
                                  "127.0.0.1", "--port", str(port)],
                    tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@contextlib.contextmanager
def aws_server(command: Callable[[int], list[str]], log_path: Path,
               access_key: str = "testing") -> Iterator[str]:
    """Start ``command(port)``, a server standing in for AWS on 127.0.0.1, wait (with a
    deadline) until it answers, and point boto3 at it the standard way (AWS_ENDPOINT_URL,
    fake credentials with ``access_key``, the region) until the block ends; then stop it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command(port), cwd=_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + MOTO_START_SECONDS
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the AWS stand-in at {url} did not start (exit {proc.poll()}):"
                            f" {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)  # the poll's interval: the loop waits for it to answer
        with pytest.MonkeyPatch.context() as mp:
            for name, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": access_key,
                                "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_DEFAULT_REGION": REGION}.items():
                mp.setenv(name, value)
            for name in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN", "CLOUDKON_PREFIX"):
                mp.delenv(name, raising=False)
            yield url
    finally:
        _stop(proc)


@pytest.fixture
def aws_config(moto_server) -> AwsConfig:
    """A configuration with a prefix no other test uses; nothing is created yet."""
    return AwsConfig(prefix=f"t{uuid.uuid4().hex[:10]}", region=REGION)


@pytest.fixture
def provisioned(aws_config) -> AwsConfig:
    """``aws_config`` with its queues and table made (as `cloudkon setup` makes them)."""
    from cloudkon.backends.resources import setup

    setup(aws_config, bucket=False)
    return aws_config


@pytest.fixture
def sqs(moto_server):
    import boto3

    return boto3.client("sqs", region_name=REGION)


@pytest.fixture
def dynamodb(moto_server):
    import boto3

    return boto3.client("dynamodb", region_name=REGION)


class WorkerProcess:
    """A `cloudkon worker` subprocess; its stderr goes to a file."""

    def __init__(self, config: AwsConfig, log_path: Path, args: tuple) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudkon", "worker", "--prefix", config.prefix,
             *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait()


@pytest.fixture
def start_worker(tmp_path) -> Iterator:
    """Start `cloudkon worker --prefix PREFIX ARGS...`; every worker is killed at the end."""
    started: list[WorkerProcess] = []

    def start(config: AwsConfig, *args: object) -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path / f"worker-{len(started)}.log", args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def queue_url(sqs, name: str) -> str:
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def messages_left(sqs, name: str) -> int:
    """Messages in the queue, visible or not (SQS's approximate counts, exact on moto)."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url(sqs, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (int(attrs["ApproximateNumberOfMessages"])
            + int(attrs["ApproximateNumberOfMessagesNotVisible"]))


# What tests/conftest.py takes in: the fixtures. Tests import the helpers themselves.
__all__ = ["moto_server", "aws_config", "provisioned", "sqs", "dynamodb", "start_worker"]
