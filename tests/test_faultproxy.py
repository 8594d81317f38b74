"""Faults between every process and AWS: benchmarks/faultproxy.py stands between `cloudkon
submit`, `cloudkon worker` and `cloudkon collect` and the moto server (AWS_ENDPOINT_URL, as
any user would set it) and answers 500s and 503 throttling, forwards calls and then closes
the connection unanswered, and holds calls for longer than a lease; meanwhile workers are
killed with SIGKILL and replaced. Every task still has exactly one result, and no task runs
more often than its bundle was claimed, claims beyond the first being owed to a killed
worker's bundles or to one its worker gave up. The CI run is small; the soak
(`./scripts/test -m slow tests/test_faultproxy.py`) runs 5,000 tasks. RELIABILITY.md
records the figures of the last soak.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from aws_fixtures import messages_left
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from conftest import wait_until
from submit_helpers import read_results

from benchmarks.faultproxy import (
    ERROR,
    HANG,
    KINDS,
    THROTTLE,
    UNANSWERED,
    FaultProxy,
    Schedule,
    read_stats,
)
from cloudkon.backends.dynamodb import DynamoLeaseStore
from cloudkon.codec import unpack_results

ROOT = Path(__file__).resolve().parent.parent
VISIBILITY = 3  # s: the lease is 0.9 of it, 2.7 s
HANG_SECONDS = VISIBILITY + 0.5  # a hung call is held longer than a lease
WORKER_THREADS = 2
# What a worker logs when it gives up a bundle it had claimed, each once per bundle: its
# claim is then taken over by another (a new attempt) without any worker having died.
GIVE_UPS = re.compile(r"its lease ran out without a heartbeat landing|lease lost to another"
                      r" worker|gave back bundle|comes back after its visibility timeout")


def _client(service: str, url: str, read_timeout: float = 10):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1},
                                      read_timeout=read_timeout, connect_timeout=2))


# --------------------------------------------------------------------------- the harness


def test_injected_faults_take_each_protocols_shape_and_unanswered_calls_take_effect(
        moto_server, sqs):
    schedule = Schedule(sweep=True, hang_seconds=2.0)
    url = sqs.create_queue(QueueName="faultproxy-shape")["QueueUrl"]
    with FaultProxy(moto_server, schedule) as proxy:
        seen: dict[str, list] = {}
        calls = {"sqs": lambda c: c.send_message(QueueUrl=url, MessageBody="x"),
                 "dynamodb": lambda c: c.list_tables(), "s3": lambda c: c.list_buckets(),
                 "sts": lambda c: c.get_caller_identity()}  # JSON, JSON, REST-XML, query
        for service, make_call in calls.items():
            client = _client(service, proxy.url)
            impatient = _client(service, proxy.url, read_timeout=0.5)  # for the hung call
            for n in range(2 * len(KINDS)):
                try:
                    make_call(impatient if n == 2 * KINDS.index(HANG) else client)
                    seen.setdefault(service, []).append("ok")
                except ClientError as exc:
                    seen.setdefault(service, []).append(
                        (exc.response["ResponseMetadata"]["HTTPStatusCode"],
                         exc.response["Error"]["Code"]))
                except (ConnectionClosedError, ReadTimeoutError) as exc:
                    seen.setdefault(service, []).append(type(exc).__name__)
        stats = proxy.stats()
    # Each kind in turn, a success after each: the codes botocore and cloudkon.aws retry.
    closed, timeout = "ConnectionClosedError", "ReadTimeoutError"
    assert seen == {
        "sqs": [(500, "InternalError"), "ok", (503, "ThrottlingException"), "ok", closed, "ok",
                timeout, "ok"],
        "dynamodb": [(500, "InternalServerError"), "ok", (503, "ThrottlingException"), "ok",
                     closed, "ok", timeout, "ok"],
        "s3": [(500, "InternalError"), "ok", (503, "SlowDown"), "ok", closed, "ok", timeout, "ok"],
        "sts": [(500, "InternalError"), "ok", (503, "Throttling"), "ok", closed, "ok", timeout,
                "ok"],
    }
    assert stats["injected"]["SendMessage"] == {kind: 1 for kind in KINDS}
    assert stats["calls"]["SendMessage"] == 2 * len(KINDS)
    # The unanswered send took effect, and the hung one either landed late or never did.
    expected = 4 + 1 + schedule.forward_after_hang("SendMessage", 6)
    wait_until(lambda: messages_left(sqs, "faultproxy-shape") == expected,
               what=f"{expected} messages sent")
    assert messages_left(sqs, "faultproxy-shape") == expected


def test_schedule_is_seeded_and_keeps_to_its_rates():
    schedule = Schedule({ERROR: 0.1, THROTTLE: 0.1, UNANSWERED: 0.05, HANG: 0.05}, seed=3)
    decisions = [schedule.fault("UpdateItem", n) for n in range(4000)]
    assert decisions == [Schedule(dict(schedule.rates), seed=3).fault("UpdateItem", n)
                         for n in range(4000)]
    shares = Counter(decisions)
    assert abs(shares[ERROR] / 4000 - 0.1) < 0.02 and abs(shares[HANG] / 4000 - 0.05) < 0.015
    assert decisions != [Schedule(dict(schedule.rates), seed=4).fault("UpdateItem", n)
                         for n in range(4000)]
    assert Schedule(dict(schedule.rates), only=frozenset({"GetItem"})).fault("UpdateItem", 0) is None
    with pytest.raises(ValueError, match="sum to at most 1"):
        Schedule({ERROR: 0.7, HANG: 0.7})
    with pytest.raises(ValueError, match="unknown fault kinds"):
        Schedule({"boom": 0.1})


def test_the_proxy_runs_as_a_command_and_reports_what_it_injected_at_exit(
        moto_server, tmp_path):
    stats_file = tmp_path / "stats.json"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faultproxy", "--upstream", moto_server, "--sweep",
         "--stats", stats_file], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        first = proxy.stdout.readline()
        assert first.startswith("AWS_ENDPOINT_URL=http://127.0.0.1:"), first
        client = _client("dynamodb", first.strip().split("=", 1)[1])
        with pytest.raises(ClientError, match="InternalServerError"):
            client.list_tables()
        client.list_tables()
        assert read_stats(first.strip().split("=", 1)[1])["calls"] == {"ListTables": 2}
    finally:
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=30)
    assert proxy.returncode == 0
    assert json.loads(stats_file.read_text())["injected"] == {"ListTables": {ERROR: 1}}
    assert json.loads(out)["totals"] == {ERROR: 1}


def test_the_test_moto_server_makes_concurrent_conditional_claims_of_one_key_one_winner(
        provisioned):
    # Plain moto answers two claims of one key, sent at once, with two CLAIMED about one
    # time in five: found by the fault proxy (a hung claim released just as another worker
    # claimed). The suite's moto server hands DynamoDB calls over one at a time, as
    # DynamoDB's per-item atomicity would have it, and so does the proxy.
    from cloudkon import aws

    store = DynamoLeaseStore(aws.dynamodb_client(provisioned, 4), provisioned.lease_table)
    doubles = []
    for key in range(40):
        barrier, outcomes = threading.Barrier(2), []

        def claim(owner: str, key: int = key, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            outcomes.append(store.claim(f"race#{key}", owner, 30).outcome)

        threads = [threading.Thread(target=claim, args=(f"w{i}/1",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if outcomes.count("CLAIMED") != 1:
            doubles.append((key, outcomes))
    assert not doubles


# --------------------------------------------------------------------------- the chaos run


@dataclass
class Figures:
    tasks: int
    bundles: int
    kills: int
    give_ups: int
    takeovers: int  # claims beyond the first, over all bundles
    reruns: int  # task runs beyond the first
    seconds: float
    injected: dict  # kind -> faults, workers' and submitter's proxy plus collector's
    calls: int


def chaos_run(*, provisioned, dynamodb, start_worker, start_cloudkon, cloudkon, write_workload,
              tmp_path, monkeypatch, moto_server, tasks: int, workers: int, schedule: Schedule,
              collector_schedule: Schedule, kill_when, task_seconds: float) -> tuple[Figures, dict]:
    """Submit ``tasks`` tasks through a fault proxy, run them on ``workers`` workers, kill a
    worker that holds a bundle (and start another) whenever ``kill_when(done_tasks, elapsed)`` says so,
    collect through a second proxy; check every outcome and return the figures."""
    started = time.monotonic()
    ran = tmp_path / "ran.txt"
    workload = write_workload("".join(f"echo {n} >> {ran}; sleep {task_seconds}\n"
                                      for n in range(1, tasks + 1)))
    with FaultProxy(moto_server, schedule) as proxy, \
            FaultProxy(moto_server, collector_schedule) as collector_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # every process started from now
        aws = ("--prefix", provisioned.prefix)
        submitted = cloudkon("submit", *aws, "--direct", "--bundle-ms", "200", workload)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().splitlines()[-1]
        args = ("--threads", WORKER_THREADS, "--visibility-timeout", VISIBILITY,
                "--wait-seconds", 1, "--liveness-seconds", 600, "--no-create")
        running = [start_worker(provisioned, *args) for _ in range(workers)]
        everyone = list(running)
        out = tmp_path / "results.jsonl"
        collector = start_cloudkon("collect", *aws, job_id, "-o", out, "--timeout", 3000,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env={**os.environ, "AWS_ENDPOINT_URL": collector_proxy.url})
        done = threading.Event()
        threading.Thread(target=lambda: (collector.wait(), done.set()), daemon=True).start()
        rng = random.Random(11)
        kills = 0
        while not done.wait(0.05):
            if kill_when(len(_runs(ran)), time.monotonic() - started, kills):
                busy = [w for w in running if _holds_a_bundle(w)] or running
                victim = busy[rng.randrange(len(busy))]
                running.remove(victim)
                victim.kill()
                running.append(start_worker(provisioned, *args))
                everyone.append(running[-1])
                kills += 1
                print(f"kill {kills} at {time.monotonic() - started:.1f} s, {len(_runs(ran))} runs")
        _, stderr = collector.communicate(timeout=60)
        stats, collector_stats = proxy.stats(), collector_proxy.stats()
    seconds = time.monotonic() - started

    assert collector.returncode == 0, stderr.decode()
    results = read_results(out)  # fails on a task reported twice
    assert sorted(results) == list(range(1, tasks + 1))  # none lost
    assert all(r["status"] == "succeeded" for r in results.values())
    # The re-executions: a task runs at most once per claim of its bundle, and every claim
    # beyond a bundle's first is owed to a killed worker's bundles or to a give-up.
    runs = Counter(_runs(ran))
    attempts = _attempts_by_line(dynamodb, provisioned.lease_table, job_id)
    assert sorted(attempts) == list(range(1, tasks + 1))
    assert set(runs) == set(attempts)
    over = {line: (runs[line], attempts[line][1]) for line in runs if runs[line] > attempts[line][1]}
    assert not over, f"tasks run more often than their bundles were claimed: {over}"
    bundles = {key: n for key, n in attempts.values()}
    takeovers = sum(n - 1 for n in bundles.values())
    give_ups = sum(len(GIVE_UPS.findall(w.log)) for w in everyone)
    assert takeovers <= kills * WORKER_THREADS + give_ups, (takeovers, kills, give_ups)
    injected = Counter(stats["totals"]) + Counter(collector_stats["totals"])
    figures = Figures(tasks, len(bundles), kills, give_ups, takeovers,
                      sum(runs.values()) - tasks, round(seconds, 1), dict(injected),
                      sum(stats["calls"].values()) + sum(collector_stats["calls"].values()))
    print(figures)
    print("injected by operation:", json.dumps(stats["injected"]))
    print("collector's proxy:", json.dumps(collector_stats["injected"]))
    return figures, stats


def _holds_a_bundle(worker) -> bool:
    """Whether the worker's log shows a bundle claimed and not yet ended: a kill then
    leaves a lease to take over."""
    log = worker.log
    ended = sum(log.count(what) for what in ("completed bundle", "gave back bundle",
                                             "lease ran out", "lease lost"))
    return log.count("claimed bundle") > ended


def _runs(path) -> list[int]:
    return [int(n) for n in path.read_text().split()] if path.exists() else []


def _attempts_by_line(dynamodb, table: str, job_id: str) -> dict[int, tuple[str, int]]:
    """line -> (its bundle's key, the claims that bundle had), from the lease table."""
    store = DynamoLeaseStore(dynamodb, table)
    by_line: dict[int, tuple[str, int]] = {}
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression="pk",
        FilterExpression="begins_with(pk, :job)",
        ExpressionAttributeValues={":job": {"S": f"{job_id}#"}})
    for page in pages:
        for item in page["Items"]:
            key = item["pk"]["S"]
            record = store.lookup(key)
            if record is None or record.results is None:
                continue  # the job's own record
            for result in unpack_results(record.results):
                by_line[result[0]] = (key, record.attempt)
    return by_line


CI_RATES = {ERROR: 0.03, THROTTLE: 0.03, UNANSWERED: 0.03, HANG: 0.01}


@pytest.mark.timeout(120)
def test_faults_on_every_call_and_killed_workers_lose_no_task_and_rerun_within_bound(
        provisioned, dynamodb, start_worker, start_cloudkon, cloudkon, write_workload, tmp_path,
        monkeypatch, moto_server):
    tasks = 240
    kill_at = (tasks // 4, tasks * 3 // 8)  # two kills early on: their takeovers overlap

    def kill_when(done: int, elapsed: float, kills: int) -> bool:
        return kills < len(kill_at) and done >= kill_at[kills]

    figures, _ = chaos_run(
        provisioned=provisioned, dynamodb=dynamodb, start_worker=start_worker,
        start_cloudkon=start_cloudkon, cloudkon=cloudkon, write_workload=write_workload,
        tmp_path=tmp_path, monkeypatch=monkeypatch, moto_server=moto_server, tasks=tasks,
        workers=3, schedule=Schedule(CI_RATES, seed=5, hang_seconds=HANG_SECONDS),
        collector_schedule=Schedule({ERROR: 0.03, THROTTLE: 0.03}, seed=6),
        kill_when=kill_when, task_seconds=0.02)
    assert figures.kills == 2
    assert all(figures.injected.get(kind, 0) >= 1 for kind in KINDS), figures.injected


SOAK_TASKS = 5000
SOAK_RATES = {ERROR: 0.02, THROTTLE: 0.02, UNANSWERED: 0.02, HANG: 0.005}
# The operations every run makes many calls of: each must have met every kind of fault.
SOAK_OPERATIONS = {"ReceiveMessage", "UpdateItem", "SendMessageBatch", "DeleteMessageBatch",
                   "ChangeMessageVisibility", "GetItem", "GetQueueUrl"}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_5000_tasks_under_every_fault_and_kills_every_few_seconds(
        provisioned, dynamodb, start_worker, start_cloudkon, cloudkon, write_workload, tmp_path,
        monkeypatch, moto_server):
    rng = random.Random(23)
    next_kill = [rng.uniform(2.0, 5.0)]

    def kill_when(done: int, elapsed: float, kills: int) -> bool:
        if done >= SOAK_TASKS or elapsed < next_kill[0]:
            return False
        next_kill[0] = elapsed + rng.uniform(2.0, 5.0)
        return True

    figures, stats = chaos_run(
        provisioned=provisioned, dynamodb=dynamodb, start_worker=start_worker,
        start_cloudkon=start_cloudkon, cloudkon=cloudkon, write_workload=write_workload,
        tmp_path=tmp_path, monkeypatch=monkeypatch, moto_server=moto_server, tasks=SOAK_TASKS,
        workers=4, schedule=Schedule(SOAK_RATES, seed=7, sweep=True, hang_seconds=HANG_SECONDS),
        collector_schedule=Schedule(SOAK_RATES, seed=8, sweep=True, hang_seconds=HANG_SECONDS),
        kill_when=kill_when, task_seconds=0.02)
    assert figures.kills >= 20 and figures.takeovers >= 1
    missing = {op: set(KINDS) - set(stats["injected"].get(op, {})) for op in SOAK_OPERATIONS}
    assert not any(missing.values()), missing
