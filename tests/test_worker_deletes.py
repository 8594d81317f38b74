"""The worker deletes finished bundles' input messages in batches (worker/deletes.py): within
moments while it serves, ten per DeleteMessageBatch, and whatever is pending when it stops."""

from __future__ import annotations

import threading
import time

from conftest import wait_until

from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from cloudkon.codec import decode_results, encode_bundle
from cloudkon.config import WorkerConfig
from cloudkon.model import Bundle
from worker.daemon import Worker
from worker.deletes import DeleteBatcher


class CountingQueue:
    """A memory queue that counts the delete calls made to it."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.name = queue.name
        self.calls: list[int] = []  # messages per call, 1 for delete()

    def __getattr__(self, name):
        return getattr(self.queue, name)

    def delete(self, message) -> None:
        self.calls.append(1)
        self.queue.delete(message)

    def delete_batch(self, messages) -> None:
        self.calls.append(len(messages))
        self.queue.delete_batch(messages)


def received(count: int):
    broker = MemoryBroker()
    queue = broker.create("in")
    queue.send_batch([f"m{i}" for i in range(count)])
    messages = []
    while batch := queue.receive(10, 0, 600):
        messages += batch
    assert len(messages) == count
    return queue, messages


def test_messages_are_deleted_ten_per_call_within_the_delay():
    queue, messages = received(25)
    counting = CountingQueue(queue)
    deletes = DeleteBatcher(counting, delay=0.2)
    for m in messages:
        deletes.add(m)
    wait_until(lambda: len(queue) == 0, what="every message deleted")
    assert sum(counting.calls) == 25
    assert max(counting.calls) == 10 and len(counting.calls) <= 5
    deletes.close(5)


def test_close_deletes_what_is_pending_at_once_and_later_adds_delete_directly():
    queue, messages = received(3)
    deletes = DeleteBatcher(queue, delay=3600)
    for m in messages[:2]:
        deletes.add(m)
    assert len(queue) == 3  # waiting for the batch to fill or the hour to pass
    started = time.monotonic()
    deletes.close(5)
    assert time.monotonic() - started < 5
    assert len(queue) == 1
    deletes.add(messages[2])  # a bundle thread finishing after the stop
    assert len(queue) == 0


def test_no_delay_deletes_each_message_at_once():
    queue, messages = received(2)
    deletes = DeleteBatcher(queue, delay=0)
    deletes.add(messages[0])
    assert len(queue) == 1


def test_a_worker_deletes_its_finished_bundles_in_batches_and_the_rest_when_it_stops():
    broker = MemoryBroker()
    inbox = CountingQueue(broker.create("in"))
    outbox = broker.create("out")
    bundles = [Bundle("job", seq, [(seq + 1, "sleep 0")]) for seq in range(12)]
    inbox.send_batch([encode_bundle(b, "out") for b in bundles])
    config = WorkerConfig("w", threads=4, wait_seconds=0.2, liveness_seconds=600,
                          delete_batch_seconds=3600)
    worker = Worker(inbox, broker, MemoryLeaseStore(), config)
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(worker.run()), daemon=True)
    thread.start()
    seqs: set[int] = set()

    def all_results() -> bool:
        for m in outbox.receive(10, 0, 600):
            seqs.add(decode_results(m.body).seq)
            outbox.delete(m)
        return len(seqs) == 12

    wait_until(all_results, what="results of 12 bundles")
    # Ten went in one batch as soon as they were finished; two wait for the hour or the stop.
    wait_until(lambda: len(inbox.queue) == 2, what="a full batch deleted")
    assert inbox.calls == [10]
    worker.stop()
    thread.join(30)
    assert code == [0]
    assert len(inbox.queue) == 0
    assert inbox.calls == [10, 2]
