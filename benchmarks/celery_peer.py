"""Celery with its SQS broker, on the moto server: a peer that CloudKon's benchmarks run
beside it, doing the same job the way a Celery-on-AWS user would.

Broker: kombu's SQS transport, its endpoint given in the broker URL (``sqs://HOST:PORT``,
kombu's own switch for a local SQS), so every request of the producer, of the worker's
blocking boto3 client and of its pycurl long polls goes there. Results: Celery's DynamoDB
backend on the same endpoint, the all-AWS choice. Credentials come from the environment
(boto3's chain); region is us-east-1.

    python -m benchmarks.celery_peer create --endpoint URL --queue NAME
    python -m benchmarks.celery_peer worker --endpoint URL --queue NAME --concurrency N
    python -m benchmarks.celery_peer submit --endpoint URL --queue NAME WORKLOAD

``submit`` prints one JSON object: {"tasks", "succeeded", "failed", "wall_seconds"}.
The queue and the results table (named after the queue) are made by ``create_resources``
first, as a deployment would make them once, and removed by ``delete_resources``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import boto3
from celery import Celery, group

from cloudkon.workload import Workload, sleep_ms

log = logging.getLogger(__name__)

_MODULE = "benchmarks.celery_peer"  # `python -m` this
REGION = "us-east-1"
SHELL = "/bin/sh"
TASK_NAME = "benchmarks.celery_peer.run_line"
# Celery's "Optimizing" guide: for many short tasks where throughput matters the prefetch
# multiplier "should be large. Say 64, or 128". The transport still receives at most 10
# messages a call (the SQS limit); this lets it keep receiving while tasks run.
PREFETCH_MULTIPLIER = 64
# The threads pool: the tasks sleep or wait on a child process, so slots need not be
# processes. `--pool prefork` is there to compare.
DEFAULT_POOL = "threads"
POOLS = ("threads", "prefork")
# Seconds between polls of the result backend while waiting: ResultSet.join's default.
JOIN_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True)
class PeerConfig:
    """Where the peer's queue and results live; the table is named after the queue."""

    endpoint: str  # e.g. http://127.0.0.1:5000, the moto server
    queue: str
    region: str = REGION

    @property
    def table(self) -> str:
        return self.queue


def run_line(command: str) -> dict:
    """Run one workload line as CloudKon does: ``sleep N`` sleeps N ms in-process, any
    other line runs as ``sh -c LINE``; return its exit code and start and end times.

    A line starting with ``sleep`` that is not ``sleep N`` raises ValueError (the task fails).
    """
    start = time.time()
    ms = sleep_ms(command)
    if ms is not None:
        time.sleep(ms / 1000)
        exit_code = 0
    else:
        done = subprocess.run([SHELL, "-c", command], stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        exit_code = done.returncode
    return {"exit_code": exit_code, "start": start, "end": time.time()}


def make_app(config: PeerConfig) -> Celery:
    """A Celery app with ``run_line`` registered, its broker and results on ``config``'s
    endpoint."""
    endpoint = urlsplit(config.endpoint)
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        raise ValueError(f"endpoint must be an http(s)://HOST[:PORT] URL, not {config.endpoint!r}")
    netloc = endpoint.hostname + (f":{endpoint.port}" if endpoint.port else "")
    app = Celery("cloudkon_celery_peer", set_as_current=False)
    app.conf.update(
        # kombu makes the SQS endpoint from the URL's host and port, with http unless
        # is_secure; no user or password, so boto3 takes the environment's credentials.
        broker_url=f"sqs://{netloc}",
        broker_transport_options={
            "region": config.region,
            "is_secure": endpoint.scheme == "https",
        },
        broker_connection_retry_on_startup=True,
        # The DynamoDB backend takes the region from the URL's host; the endpoint is
        # its dynamodb_endpoint_url setting.
        result_backend=f"dynamodb://@{config.region}/{config.table}",
        dynamodb_endpoint_url=config.endpoint,
        task_default_queue=config.queue,
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    )
    app.task(name=TASK_NAME)(run_line)
    return app


def create_resources(config: PeerConfig) -> None:
    """Make the queue and the results table, with kombu's and Celery's own code, before
    any worker or client runs: the backend's create-if-absent races between threads."""
    app = make_app(config)
    with app.connection_for_write() as conn:
        app.amqp.queues[config.queue].bind(conn.default_channel).declare()
    app.backend.client  # noqa: B018 - describes the table, creates it if absent


def delete_resources(config: PeerConfig) -> None:
    """Delete the queue and the results table if they exist."""
    sqs = boto3.client("sqs", region_name=config.region, endpoint_url=config.endpoint)
    dynamodb = boto3.client("dynamodb", region_name=config.region,
                            endpoint_url=config.endpoint)
    try:
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=config.queue)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        pass
    try:
        dynamodb.delete_table(TableName=config.table)
    except dynamodb.exceptions.ResourceNotFoundException:
        pass


def run_worker(config: PeerConfig, concurrency: int, pool: str = DEFAULT_POOL,
               loglevel: str = "WARNING") -> None:
    """Run a Celery worker in the foreground until SIGTERM (warm shutdown) or SIGINT."""
    app = make_app(config)
    # Gossip, mingle and remote control need a fanout exchange, which SQS lacks (Celery
    # leaves them out on SQS anyway); without heartbeats no event is sent at all.
    app.worker_main([
        "worker", "--pool", pool, "--concurrency", str(concurrency), "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])


def submit(config: PeerConfig, workload: str) -> dict:
    """Send one task per workload line as a group, wait for every result, and return
    {"tasks", "succeeded", "failed", "wall_seconds"} (first send to last result)."""
    app = make_app(config)
    task = app.tasks[TASK_NAME]
    commands = [command for _, command in Workload(workload, on_bad_line=_report_bad_line)]
    if not commands:
        return {"tasks": 0, "succeeded": 0, "failed": 0, "wall_seconds": 0.0}
    start = time.monotonic()
    results = group(task.s(command) for command in commands).apply_async()
    # join, not join_native: the DynamoDB backend's mget is one GetItem per key, and
    # join_native asks again for every pending task each round; join waits on one result
    # at a time, so a worker that keeps up costs one GetItem per task. A task that raised
    # comes back as its exception instead of being raised here.
    values = results.join(propagate=False, interval=JOIN_INTERVAL_SECONDS)
    wall = time.monotonic() - start
    succeeded = sum(1 for v in values if isinstance(v, dict) and v["exit_code"] == 0)
    return {"tasks": len(commands), "succeeded": succeeded,
            "failed": len(commands) - succeeded, "wall_seconds": round(wall, 6)}


def _report_bad_line(bad) -> None:
    print(f"skipped: {bad}", file=sys.stderr)


def create_command(endpoint: str, queue: str) -> list[str]:
    """The argv that makes the queue and the results table (``create_resources``)."""
    return [sys.executable, "-m", _MODULE, "create", "--endpoint", endpoint, "--queue", queue]


def worker_command(endpoint: str, queue: str, concurrency: int,
                   pool: str = DEFAULT_POOL) -> list[str]:
    """The argv that starts a worker subprocess (stop it with SIGTERM)."""
    return [sys.executable, "-m", _MODULE, "worker",
            "--endpoint", endpoint, "--queue", queue, "--concurrency", str(concurrency),
            "--pool", pool]


def submit_command(endpoint: str, queue: str, workload: str) -> list[str]:
    """The argv that submits ``workload`` and prints the JSON outcome on stdout."""
    return [sys.executable, "-m", _MODULE, "submit",
            "--endpoint", endpoint, "--queue", queue, str(workload)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_MODULE}",
        description="Celery with its SQS broker and DynamoDB results on a given endpoint.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "worker", "submit"):
        sub = commands.add_parser(name)
        sub.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:5000")
        sub.add_argument("--queue", required=True, help="queue name, unique per run")
        sub.add_argument("--region", default=REGION)
        if name == "worker":
            sub.add_argument("--concurrency", type=int, required=True,
                             help="execution slots (threads or processes)")
            sub.add_argument("--pool", choices=POOLS, default=DEFAULT_POOL)
            sub.add_argument("--loglevel", default="WARNING")
        elif name == "submit":
            sub.add_argument("workload")
    args = parser.parse_args(argv)
    config = PeerConfig(args.endpoint, args.queue, args.region)
    if args.command == "create":
        create_resources(config)
        return 0
    if args.command == "worker":
        run_worker(config, args.concurrency, args.pool, args.loglevel)
        return 0
    outcome = submit(config, args.workload)
    print(json.dumps(outcome), flush=True)
    return 0 if outcome["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
