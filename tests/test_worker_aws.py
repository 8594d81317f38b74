"""The worker daemon against SQS and DynamoDB (the moto server), for real.

Workers are `cloudkon worker` subprocesses wherever signals or crashes matter (SIGTERM,
kill -9). Where the test must reach into the worker's AWS clients (injected faults through
botocore's event hooks), the daemon runs in a thread of the test instead, built exactly as
the command builds it. Tasks append to a file, which tells how often each one ran.
"""

from __future__ import annotations

import json
import signal
import threading
import types
from collections import Counter
from pathlib import Path

import pytest
from aws_fixtures import messages_left, queue_url
from conftest import wait_until

from cloudkon import aws
from cloudkon.backends import COMPLETED, IN_PROGRESS
from cloudkon.codec import decode_results, encode_bundle, unpack_results
from cloudkon.config import AwsConfig, WorkerConfig
from cloudkon.model import Bundle, task_id
from worker.daemon import Worker
from cloudkon.backends.dynamodb import DynamoLeaseStore
from cloudkon.backends.sqs import SqsBroker

FAST = ("--wait-seconds", 1, "--liveness-seconds", 600, "--drain-seconds", 30)


def send(sqs, config: AwsConfig, bundle: Bundle, copies: int = 1) -> None:
    url = queue_url(sqs, config.input_queue)
    for _ in range(copies):
        sqs.send_message(QueueUrl=url, MessageBody=encode_bundle(bundle, config.output_queue))


class Collector:
    """The test's own `cloudkon collect`: results from the output queue, by task id."""

    def __init__(self, sqs, config: AwsConfig) -> None:
        self.sqs = sqs
        self.url = queue_url(sqs, config.output_queue)
        self.results: dict[str, list[tuple]] = {}

    def poll(self) -> None:
        response = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=1)
        for message in response.get("Messages", ()):
            rb = decode_results(message["Body"])
            for r in rb.results:
                self.results.setdefault(task_id(rb.job_id, r[0]), []).append(r)
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def until(self, ids: set[str], timeout: float = 60) -> dict[str, list[tuple]]:
        def arrived() -> bool:
            self.poll()
            return ids <= self.results.keys()

        wait_until(arrived, timeout=timeout, what=f"results of {sorted(ids)}")
        return self.results


def ids_of(bundle: Bundle) -> set[str]:
    return {task_id(bundle.job_id, line) for line, _ in bundle.tasks}


def appending(path: Path, word: str, then: str = "") -> str:
    command = f"echo {word} >> {path}"
    return f"{command}; {then}" if then else command


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def lease_store(dynamodb, config: AwsConfig) -> DynamoLeaseStore:
    return DynamoLeaseStore(dynamodb, config.lease_table)


def test_same_bundle_sent_twice_runs_once_on_resources_the_worker_created(
        aws_config, sqs, start_worker, tmp_path):
    worker = start_worker(aws_config, "--threads", 2, "--visibility-timeout", 4, *FAST)
    # Nothing was set up: the worker creates its queues and table when it starts.
    wait_until(lambda: "lease table" in worker.log and "serving" in worker.log,
               what="the worker creating its resources")
    log = tmp_path / "runs"
    bundle = Bundle("dup", 0, [(1, appending(log, "one")), (2, appending(log, "two"))])
    send(sqs, aws_config, bundle, copies=2)
    collector = Collector(sqs, aws_config)
    collector.until(ids_of(bundle))
    wait_until(lambda: messages_left(sqs, aws_config.input_queue) == 0, what="both copies deleted")
    collector.poll()
    assert runs(log) == ["one", "two"]
    for copies in collector.results.values():
        assert all(copy == copies[0] for copy in copies)  # once per task id, after dedup
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log


def test_poison_message_reaches_the_dead_letter_queue_and_the_worker_keeps_serving(
        provisioned, sqs, start_worker):
    config = provisioned
    poison = sqs.send_message(QueueUrl=queue_url(sqs, config.input_queue),
                              MessageBody='{"v": 1, "kind": "tasks", "job": ')["MessageId"]
    bundle = Bundle("after-poison", 0, [(1, "echo still serving")])
    send(sqs, config, bundle)
    worker = start_worker(config, "--threads", 1, "--log-json", *FAST)
    results = Collector(sqs, config).until(ids_of(bundle))
    assert results["after-poison:1"][0][7] == "still serving\n"
    dead = sqs.receive_message(QueueUrl=queue_url(sqs, config.dead_letter_queue),
                               WaitTimeSeconds=5, MessageAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in dead] == ['{"v": 1, "kind": "tasks", "job": ']
    assert "not JSON" in dead[0]["MessageAttributes"]["cloudkon-dead-letter-reason"]["StringValue"]
    lines = [json.loads(line) for line in worker.log.splitlines()]
    assert any(line.get("message_id") == poison and "dead-letter" in line["message"]
               for line in lines)
    completed = [line for line in lines if line["message"].startswith("completed bundle")]
    assert [(c["job_id"], c["bundle"]) for c in completed] == [("after-poison", 0)]
    # A finished bundle's message is deleted within DELETE_BATCH_SECONDS, with others.
    wait_until(lambda: messages_left(sqs, config.input_queue) == 0, what="message deleted")


def test_killed_worker_bundle_is_taken_over_and_no_task_is_lost(
        provisioned, sqs, dynamodb, start_worker, tmp_path):
    config = provisioned
    log = tmp_path / "runs"
    bundle = Bundle("takeover", 0, [(1, appending(log, "1")),
                                    (2, appending(log, "2", "/bin/sleep 3")),
                                    (3, appending(log, "3"))])
    send(sqs, config, bundle)
    args = ("--threads", 1, "--visibility-timeout", 2, *FAST)
    first = start_worker(config, *args)
    leases = lease_store(dynamodb, config)
    # Task 2 runs, and a heartbeat has stored task 1's result: now the worker dies.
    wait_until(lambda: runs(log) == ["1", "2"] and leases.lookup("takeover#0").results,
               what="task 2 running, task 1 stored")
    first.kill()
    start_worker(config, *args)
    results = Collector(sqs, config).until(ids_of(bundle))
    assert sorted(results) == ["takeover:1", "takeover:2", "takeover:3"]
    assert runs(log) == ["1", "2", "2", "3"]  # task 1 was not run again; 2 was cut short
    record = leases.lookup("takeover#0")
    assert (record.outcome, record.attempt) == (COMPLETED, 2)


def test_task_longer_than_the_visibility_timeout_completes_once(
        provisioned, sqs, dynamodb, start_worker, tmp_path):
    config = provisioned
    log = tmp_path / "runs"
    bundle = Bundle("long", 0, [(1, appending(log, "ran", "/bin/sleep 4"))])
    send(sqs, config, bundle)
    # Two threads: were the heartbeat to fail, the other thread would receive it again.
    worker = start_worker(config, "--threads", 2, "--visibility-timeout", 2, *FAST)
    Collector(sqs, config).until(ids_of(bundle))
    wait_until(lambda: messages_left(sqs, config.input_queue) == 0, what="message deleted")
    assert runs(log) == ["ran"]
    assert lease_store(dynamodb, config).lookup("long#0").attempt == 1  # never claimed again
    assert "replayed" not in worker.log and "held by" not in worker.log


def test_sigterm_lets_running_tasks_finish_and_gives_back_the_rest_at_once(
        provisioned, sqs, dynamodb, start_worker, tmp_path):
    config = provisioned
    log = tmp_path / "runs"
    running = Bundle("term", 0, [(1, appending(log, "a1", "/bin/sleep 2")),
                                 (2, appending(log, "a2"))])
    send(sqs, config, running)
    worker = start_worker(config, "--threads", 2, "--visibility-timeout", 30, "--wait-seconds", 2,
                          "--liveness-seconds", 600)
    wait_until(lambda: runs(log) == ["a1"], what="task a1 running")
    worker.signal(signal.SIGTERM)
    # Sent after the signal: a long poll still in flight may return it; it goes back too.
    late = Bundle("late", 0, [(1, appending(log, "b1"))])
    send(sqs, config, late)
    assert worker.wait() == 0, worker.log
    assert runs(log) == ["a1"]  # a1 finished; a2 and b1 never started
    record = lease_store(dynamodb, config).lookup("term#0")
    assert record.outcome == IN_PROGRESS and record.lease_expires == 0  # released
    assert [r[0] for r in unpack_results(record.results, running.tasks)] == [1]
    # Both messages can be received at once, not 30 s later.
    url = queue_url(sqs, config.input_queue)
    bodies: list[str] = []

    def both_visible() -> bool:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                  WaitTimeSeconds=1).get("Messages", [])
        bodies.extend(m["Body"] for m in got)
        return len(bodies) == 2

    wait_until(both_visible, timeout=10, what="both messages visible again")
    assert "gave back bundle term#0" in worker.log


def test_second_sigterm_ends_running_tasks_gives_everything_back_and_exits_at_once(
        provisioned, sqs, start_worker, tmp_path):
    config = provisioned
    log = tmp_path / "runs"
    send(sqs, config, Bundle("hard", 0, [(1, appending(log, "started", "/bin/sleep 60"))]))
    worker = start_worker(config, "--threads", 1, "--visibility-timeout", 30, *FAST)
    wait_until(lambda: runs(log) == ["started"], what="the task running")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in worker.log, what="the drain")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 128 + signal.SIGTERM  # not the task's 60 s
    got = sqs.receive_message(QueueUrl=queue_url(sqs, config.input_queue), WaitTimeSeconds=5,
                              VisibilityTimeout=60).get("Messages", [])
    assert len(got) == 1  # visible again at once, not after the 30 s visibility timeout


class Faults:
    """Fails, in each thread, every other call of every operation: throttling, 500, 503 and
    a dropped connection in turn. Each call thus succeeds on its second attempt, so the test
    is deterministic, and every operation the worker uses meets every kind of fault."""

    KINDS = ((400, "ThrottlingException"), (500, "InternalError"), (503, "ServiceUnavailable"),
             None)

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.calls: Counter = Counter()
        self.injected: Counter = Counter()
        self.partial_batches = 0

    def before_call(self, model, **kwargs):
        from botocore.exceptions import EndpointConnectionError

        if threading.current_thread().name.startswith("cloudkon-beat"):
            # A heartbeat has one attempt within its budget at this test's 2 s lease, and
            # a beat that cannot land ends its bundle on purpose: faults of the heartbeat
            # path are tests/test_worker_heartbeat.py's.
            return None
        counts = self._local.__dict__.setdefault("counts", Counter())
        n = counts[model.name]
        counts[model.name] += 1
        with self._lock:
            self.calls[model.name] += 1
            if n % 2:
                return None
            self.injected[model.name] += 1
        kind = self.KINDS[(n // 2) % len(self.KINDS)]
        if kind is None:
            raise EndpointConnectionError(endpoint_url="http://injected.invalid")
        status, code = kind
        return (types.SimpleNamespace(status_code=status, headers={}),
                {"Error": {"Code": code, "Message": "injected"},
                 "ResponseMetadata": {"HTTPStatusCode": status}})

    def after_send_batch(self, parsed, **kwargs):
        """The first batch that went through is reported failed on SQS's side (it did go
        out): a 200 with failed entries, to be sent again, and only those."""
        with self._lock:
            if self.partial_batches or not parsed.get("Successful"):
                return
            self.partial_batches += 1
        parsed["Failed"] = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError",
                             "Message": "injected"} for e in parsed.pop("Successful")]
        parsed["Successful"] = []


def in_process_worker(config: AwsConfig, hooks=(), threads: int = 2, visibility: int = 2):
    """The daemon as `cloudkon worker` builds it, in a thread, its clients hooked."""
    sqs = aws.sqs_client(config, threads + 4)
    ddb = aws.dynamodb_client(config, threads + 4)
    for event, handler in hooks:
        sqs.meta.events.register(event, handler)
        ddb.meta.events.register(event, handler)
    broker = SqsBroker(sqs)
    inbox = broker.queue(config.input_queue, dead_letter=config.dead_letter_queue)
    worker = Worker(inbox, broker, DynamoLeaseStore(ddb, config.lease_table),
                    WorkerConfig("in-process", threads=threads, visibility_seconds=visibility,
                                 wait_seconds=1, drain_seconds=30, liveness_seconds=600,
                                 task_timeout=60))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()), daemon=True)
    thread.start()

    def stop(hard: bool = False) -> int:
        worker.stop(hard=hard)
        thread.join(60)
        assert not thread.is_alive()
        return codes[0]

    return worker, stop


@pytest.fixture
def stoppers():
    running = []
    yield running
    for stop in running:
        stop(hard=True)


def test_throttling_and_server_errors_on_every_call_lose_no_task(
        provisioned, sqs, tmp_path, stoppers):
    config = provisioned
    faults = Faults()
    worker, stop = in_process_worker(config, [("before-call", faults.before_call),
                                              ("after-call.sqs.SendMessageBatch",
                                               faults.after_send_batch)])
    log = tmp_path / "runs"
    # Short tasks, one that outlasts a heartbeat interval, and a poison message.
    bundles = [Bundle("chaos", seq, [(seq * 10 + i, appending(log, f"{seq}-{i}")) for i in (1, 2)])
               for seq in range(4)]
    bundles.append(Bundle("chaos", 4, [(41, appending(log, "4-1", "/bin/sleep 1.5"))]))
    for b in bundles:
        send(sqs, config, b)
    sqs.send_message(QueueUrl=queue_url(sqs, config.input_queue), MessageBody="poison")
    collector = Collector(sqs, config)
    collector.until(set().union(*map(ids_of, bundles)))
    wait_until(lambda: messages_left(sqs, config.input_queue) == 0, what="input queue empty")
    assert sorted(runs(log)) == sorted(f"{s}-{i}" for s in range(4) for i in (1, 2)) + ["4-1"]
    # A bundle given back at the stop goes through faults too.
    gate = tmp_path / "gate"
    gated = f"while [ ! -e {gate} ]; do /bin/sleep 0.05; done"
    last = Bundle("chaos", 5, [(51, appending(log, "5-1", gated)), (52, appending(log, "5-2"))])
    send(sqs, config, last)
    wait_until(lambda: "5-1" in runs(log), what="the last bundle running")
    stopping = threading.Thread(target=lambda: stoppers.append(stop()))  # drains
    stopping.start()
    wait_until(lambda: worker._draining.is_set(), what="the drain")
    gate.touch()
    stopping.join(60)
    assert stoppers.pop() == 0
    used = {"ReceiveMessage", "UpdateItem", "SendMessageBatch", "DeleteMessage", "GetQueueUrl",
            "SendMessage", "ChangeMessageVisibilityBatch"}
    assert used <= set(faults.calls), f"not called: {used - set(faults.calls)}"
    assert all(faults.injected[op] >= 1 for op in faults.calls), faults.injected
    assert faults.partial_batches == 1
    assert worker.counts["completed"] == 5 and worker.counts["dead_lettered"] == 1
    assert worker.counts["failed"] == 0
    assert messages_left(sqs, config.input_queue) == 1  # the given-back bundle, waiting


def test_results_lost_after_completion_are_replayed_without_running_again(
        provisioned, sqs, dynamodb, tmp_path, stoppers):
    config = provisioned
    refused = []

    def refuse_first_send(**kwargs):
        if not refused:  # AccessDenied is not retried: the results are not sent this time
            refused.append(True)
            return (types.SimpleNamespace(status_code=403, headers={}),
                    {"Error": {"Code": "AccessDenied", "Message": "injected"},
                     "ResponseMetadata": {"HTTPStatusCode": 403}})
        return None

    worker, stop = in_process_worker(
        config, [("before-call.sqs.SendMessageBatch", refuse_first_send)])
    stoppers.append(stop)
    log = tmp_path / "runs"
    bundle = Bundle("crash", 0, [(1, appending(log, "ran"))])
    send(sqs, config, bundle)
    wait_until(lambda: worker.counts["failed"] == 1, what="the refused send")
    assert lease_store(dynamodb, config).lookup("crash#0").outcome == COMPLETED
    # The message comes back when its visibility runs out: its stored results are replayed.
    results = Collector(sqs, config).until(ids_of(bundle))
    wait_until(lambda: messages_left(sqs, config.input_queue) == 0, what="message deleted")
    assert runs(log) == ["ran"]
    assert results["crash:1"][0][7] == ""
    assert worker.counts["replayed"] == 1 and worker.counts["completed"] == 0


def test_batch_size_one_moves_one_message_per_call(provisioned, sqs):
    """--batch-size 1, the naive design's setting: every send and receive carries one."""
    calls: Counter = Counter()
    client = aws.sqs_client(provisioned)
    client.meta.events.register("before-call.sqs.*",
                                lambda model, **_: calls.update([model.name]))
    queue = SqsBroker(client, batch_size=1).queue(provisioned.output_queue)

    queue.send_batch(["a", "b", "c"])
    got = queue.receive(10, 0, 30)

    assert calls["SendMessageBatch"] == 3
    assert len(got) == 1
    default = SqsBroker(client).queue(provisioned.output_queue)
    assert len(default.receive(10, 0, 30)) == 2
