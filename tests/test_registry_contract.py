"""The WorkerRegistry contract (cloudkon/backends/__init__.py), held against the in-memory
registry and the DynamoDB one (on the moto server), as test_broker_contract.py does for
queues and leases."""

from __future__ import annotations

import pytest

from cloudkon.backends import WorkerRecord
from cloudkon.backends.memory import MemoryWorkerRegistry


@pytest.fixture(params=["memory", "dynamodb"])
def registry(request):
    if request.param == "memory":
        return MemoryWorkerRegistry()
    from cloudkon import aws
    from cloudkon.backends.dynamodb import DynamoWorkerRegistry

    config = request.getfixturevalue("provisioned")
    return DynamoWorkerRegistry(aws.dynamodb_client(config), config.lease_table)


def record(worker_id: str, beat: float = 1000.0, **fields) -> WorkerRecord:
    values = {"worker_id": worker_id, "instance_id": "i-0123456789abcdef0", "threads": 4,
              "busy": 1, "tasks_done": 12, "version": "0.1.0", "started": 900.5,
              "last_beat": beat, "stale_at": beat + 60}
    values.update(fields)
    return WorkerRecord(**values)


def test_a_beat_is_listed_as_it_was_given(registry):
    registry.beat(record("host-a:1"))
    assert registry.workers() == [record("host-a:1")]


def test_a_later_beat_replaces_the_record(registry):
    registry.beat(record("host-a:1"))
    registry.beat(record("host-a:1", beat=1020.25, busy=3, tasks_done=40, instance_id=""))
    assert registry.workers() == [record("host-a:1", beat=1020.25, busy=3, tasks_done=40,
                                         instance_id="")]


def test_workers_are_listed_by_id_and_removed_one_by_one(registry):
    for worker in ("host-b:2", "host-a:1", "host-c:3"):
        registry.beat(record(worker))
    assert [w.worker_id for w in registry.workers()] == ["host-a:1", "host-b:2", "host-c:3"]
    registry.remove("host-b:2")
    registry.remove("host-b:2")  # removing one that is absent is not an error
    assert [w.worker_id for w in registry.workers()] == ["host-a:1", "host-c:3"]


def test_a_record_not_renewed_reads_as_stale(registry):
    registry.beat(record("host-a:1", beat=1000.0))
    [worker] = registry.workers()
    assert not worker.stale(1059.9)
    assert worker.stale(1060.0)


def test_one_record_is_read_by_id_and_none_once_removed(registry):
    registry.beat(record("host-a:1"))
    registry.beat(record("host-b:2", beat=1020.25))
    assert registry.record("host-b:2") == record("host-b:2", beat=1020.25)
    registry.remove("host-b:2")
    assert registry.record("host-b:2") is None
    assert registry.record("never-seen") is None
