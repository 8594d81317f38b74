"""The worker daemon's registry record and its EMF metric lines, on the in-memory backends
(the daemon in a thread of the test, as in test_worker_daemon.py)."""

from __future__ import annotations

import json
import threading
import time

from conftest import wait_until

from cloudkon import __version__
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore, MemoryWorkerRegistry
from cloudkon.codec import encode_bundle
from cloudkon.config import WorkerConfig
from cloudkon.metrics import NAMESPACE, EmfMetrics
from cloudkon.model import Bundle
from worker.daemon import Worker


def start(registry=None, metrics=None, visibility: int = 3):
    broker = MemoryBroker()
    inbox = broker.create("in", dead_letter="in-dlq", max_receives=10)
    broker.create("out")
    config = WorkerConfig("host-a:42", threads=2, visibility_seconds=visibility,
                          wait_seconds=0.1, drain_seconds=10, liveness_seconds=600,
                          task_timeout=10, instance_id="i-0abc")
    worker = Worker(inbox, broker, MemoryLeaseStore(), config, registry=registry,
                    metrics=metrics)
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(worker.run()), daemon=True)
    thread.start()
    return worker, thread, inbox


def test_the_worker_keeps_its_record_while_it_serves_and_removes_it_at_exit():
    registry = MemoryWorkerRegistry()
    worker, thread, inbox = start(registry=registry, visibility=3)  # a beat a second
    [first] = wait_until(registry.workers, what="the first registry record")
    assert (first.worker_id, first.instance_id, first.threads, first.version) == \
        ("host-a:42", "i-0abc", 2, __version__)
    assert first.stale_at == first.last_beat + 3  # three beats of a second each

    inbox.send_batch([encode_bundle(Bundle("job-r", 0, [(1, "sleep 0"), (2, "sleep 0")],
                                           time.time()), "out")])
    renewed = wait_until(lambda: [w for w in registry.workers()
                                  if w.tasks_done == 2 and w.last_beat > first.last_beat],
                         what="a record counting the two tasks")
    assert not renewed[0].stale(time.time())

    worker.stop()
    thread.join(30)
    assert registry.workers() == []


def test_each_completed_bundle_logs_one_emf_line():
    lines: list[str] = []
    metrics = EmfMetrics(lines.append, "pfx-input", "host-a:42")
    worker, thread, inbox = start(metrics=metrics)
    sent = time.time()
    inbox.send_batch([encode_bundle(Bundle("job-m", 3, [(1, "sleep 0"), (2, "false"),
                                                        (3, "sleep 5")], sent), "out")])
    wait_until(lambda: lines, what="an EMF line")
    worker.stop()
    thread.join(30)

    [doc] = [json.loads(line) for line in lines]
    [directive] = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE and directive["Dimensions"] == [["Queue"]]
    names = [m["Name"] for m in directive["Metrics"]]
    assert names == ["TasksCompleted", "TasksSucceeded", "TasksFailed", "TasksTimedOut",
                     "BundleDuration", "QueueWait"]
    assert all(name in doc for name in names)  # every metric named has its value
    assert abs(doc["_aws"]["Timestamp"] / 1000 - time.time()) < 60
    assert (doc["Queue"], doc["job_id"], doc["bundle"], doc["worker"]) == \
        ("pfx-input", "job-m", 3, "host-a:42")
    assert (doc["TasksCompleted"], doc["TasksSucceeded"], doc["TasksFailed"]) == (3, 2, 1)
    assert doc["BundleDuration"] >= 5 and doc["QueueWait"] >= 0


def test_a_replayed_bundle_logs_a_replay_metric():
    lines: list[str] = []
    metrics = EmfMetrics(lines.append, "pfx-input", "host-a:42", clock=lambda: 1_800_000_000.5)
    metrics.replayed(Bundle("job-x", 7, [(1, "true")]))
    doc = json.loads(lines[0])
    assert doc["_aws"]["Timestamp"] == 1_800_000_000_500
    assert doc["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "BundlesReplayed", "Unit": "Count"}]
    assert doc["BundlesReplayed"] == 1 and doc["bundle"] == 7
