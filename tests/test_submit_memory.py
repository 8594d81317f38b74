"""The splitter and the collector on the in-memory backends (cloudkon/backends/memory.py): fast, no AWS."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest

from cloudkon.backends import Message
from cloudkon.codec import decode_bundle, encode_results, pack_results, results_bodies
from cloudkon.config import WorkerConfig
from cloudkon.errors import AwsError, JobNotFoundError, WorkloadError
from cloudkon.limits import (
    LEASE_RESULTS_MAX_BYTES,
    MAX_REPORTED_BAD_LINES,
    SQS_DEFAULT_MAX_MESSAGE_BYTES,
    SQS_MAX_MESSAGE_BYTES,
)
from cloudkon.model import FAILED, SUCCEEDED, ResultBundle
from cloudkon.workload import Workload
from cloudkon.backends.memory import MemoryBroker, MemoryLeaseStore
from submitter.collect import Collector
from submitter.manifest import REJECTED, SUBMITTED, SUBMITTING, Manifest, MemoryManifests
from submitter.split import split
from submitter.submit import submit_workload
from worker.daemon import Worker


def _drain(queue) -> list[Message]:
    got = []
    while batch := queue.receive(10, 0, 60):
        got += batch
    return got


def _bundles(queue):
    bundles = [decode_bundle(m.body)[0] for m in _drain(queue)]
    return sorted(bundles, key=lambda b: b.seq)


@pytest.fixture
def broker():
    b = MemoryBroker()
    b.create("input")
    b.create("output")
    return b


def test_split_sends_every_task_once_in_file_order_and_reports_what_is_not_a_task(
        write_workload, broker):
    path = write_workload("# header\nsleep 0\n\necho one\nsleep 1s\nsleep 5\n# tail\nfalse\n")
    report = split(Workload(str(path)), "job-a", broker.queue("input"), "output", 2, 20)
    bundles = _bundles(broker.queue("input"))
    assert [t for b in bundles for t in b.tasks] == [
        (2, "sleep 0"), (4, "echo one"), (6, "sleep 5"), (8, "false")]
    assert [b.seq for b in bundles] == list(range(len(bundles))) and report.bundles == len(bundles)
    assert {b.job_id for b in bundles} == {"job-a"}
    assert report.tasks == 4 and report.bad_line_count == 1
    assert report.bad_lines[0][0] == 5 and "milliseconds" in report.bad_lines[0][1]
    assert report.last_line == 8 and report.skipped == [[1, 1], [3, 3], [5, 5], [7, 7]]


def test_the_same_workload_split_twice_yields_the_same_bundles(write_workload, broker):
    path = write_workload("".join(f"sleep {i % 7}\n" if i % 5 else f"echo {i}\n" for i in range(500)))
    seen = []
    for _ in range(2):
        split(Workload(str(path)), "job-b", broker.queue("input"), "output", 64, 20)
        seen.append([(b.seq, b.tasks) for b in _bundles(broker.queue("input"))])
    assert seen[0] == seen[1] and len(seen[0]) > 1


def test_a_bundle_too_large_for_one_message_travels_as_several(write_workload, broker):
    long_line = "echo " + "x" * 100_000
    path = write_workload("\n".join([long_line] * 25) + "\n")
    report = split(Workload(str(path)), "job-c", broker.queue("input"), "output", 256, 1e9)
    messages = _drain(broker.queue("input"))
    assert all(len(m.body) <= SQS_MAX_MESSAGE_BYTES for m in messages) and len(messages) > 2
    lines = sorted(line for m in messages for line, _ in decode_bundle(m.body)[0].tasks)
    assert lines == list(range(1, 26)) and report.tasks == 25


def test_bad_lines_are_counted_and_the_first_few_kept_with_their_numbers(write_workload, broker):
    path = write_workload("sleep x\n" * 50 + "sleep 0\n")
    report = split(Workload(str(path)), "job-d", broker.queue("input"), "output", 256, 20)
    assert report.bad_line_count == 50 and len(report.bad_lines) == MAX_REPORTED_BAD_LINES
    assert [line for line, _ in report.bad_lines] == list(range(1, MAX_REPORTED_BAD_LINES + 1))
    assert report.skipped == [[1, 50]] and report.tasks == 1


class _FailingQueue:
    name = "failing"

    def __init__(self, fail_after: int) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def send_batch(self, bodies):
        with self.lock:
            self.calls += 1
            if self.calls > self.fail_after:
                raise AwsError("send to queue failing: InternalError (gave up after 8 attempts)")


def test_a_send_that_fails_for_good_fails_the_split(write_workload):
    path = write_workload("echo hi\n" * 200)
    with pytest.raises(AwsError):
        split(Workload(str(path)), "job-e", _FailingQueue(3), "output", 256, 20)


def test_an_empty_workload_is_recorded_rejected_and_nothing_is_sent(write_workload, broker):
    manifests = MemoryManifests()
    path = write_workload("# only a comment\n\n")
    manifest = submit_workload(Workload(str(path)), "job-f", 1.0, broker.queue("input"),
                               "output", manifests)
    assert manifest.status == REJECTED and "no tasks" in manifest.error
    assert manifests.load("job-f") == manifest and len(broker.queue("input")) == 0
    with pytest.raises(WorkloadError, match="no tasks"):
        Collector("job-f", broker.queue("output"), manifests).run(timeout=1)


def test_a_job_that_was_never_submitted_is_named(broker):
    with pytest.raises(JobNotFoundError, match="job-nope does not exist"):
        Collector("job-nope", broker.queue("output"), MemoryManifests()).run(timeout=1)


def _result(line: int, status: str = SUCCEEDED, out: str = "") -> tuple:
    return (line, f"echo {line}", status, 0 if status == SUCCEEDED else 1, None, 10.0, 10.5, out, "")


def _post(queue, job_id: str, seq: int, lines, worker: str = "w1") -> None:
    queue.send_batch([encode_results(ResultBundle(job_id, seq, [_result(n) for n in lines], 9.0,
                                                  worker))])


def _manifest(job_id: str, tasks: int, bundles: int = 1) -> Manifest:
    return Manifest(job_id, SUBMITTED, "w.txt", 9.0, tasks=tasks, bundles=bundles,
                    last_line=tasks)


def test_the_collector_keeps_its_job_leaves_other_jobs_and_drops_duplicates(broker):
    out = broker.queue("output")
    manifests = MemoryManifests()
    manifests.save(_manifest("job-g", 4, 2))
    _post(out, "job-other", 0, [1, 2])
    _post(out, "job-g", 0, [1, 2])
    _post(out, "job-g", 0, [1, 2])  # the bundle replayed: its results come again
    _post(out, "job-other", 1, [3])
    _post(out, "job-g", 1, [3, 4])
    written = []
    collection = Collector("job-g", out, manifests, on_results=written.append).run(timeout=10)
    assert collection.complete and collection.summary.counts[SUCCEEDED] == 4
    assert sorted(r[0] for b in written for r in b.results) == [1, 2, 3, 4]
    left = _drain(out)
    assert sorted(json.loads(m.body)["job"] for m in left) == ["job-other", "job-other"]


def test_a_collection_that_times_out_names_the_missing_tasks(broker):
    out = broker.queue("output")
    manifests = MemoryManifests()
    manifests.save(Manifest("job-h", SUBMITTED, "w.txt", 9.0, tasks=5, bundles=2, last_line=7,
                            skipped=[[3, 4]]))
    _post(out, "job-h", 0, [1, 5])
    collection = Collector("job-h", out, manifests).run(timeout=0.5)
    assert not collection.complete and collection.missing_count == 3
    assert collection.missing == ["job-h:2", "job-h:6", "job-h:7"]


def test_results_a_previous_collector_took_are_read_back_from_the_lease_store(broker):
    leases = MemoryLeaseStore()
    manifests = MemoryManifests()
    manifests.save(_manifest("job-i", 3, 2))
    for seq, lines in ((0, [1, 2]), (1, [3])):
        key = f"job-i#{seq}"
        assert leases.claim(key, "w9/1", 60).outcome == "CLAIMED"
        packed, _ = pack_results([_result(n, FAILED if n == 3 else SUCCEEDED, f"out {n}")
                                  for n in lines], leases.max_results_bytes)
        assert leases.complete(key, "w9/1", packed)
    _post(broker.queue("output"), "job-i", 0, [1, 2])  # one bundle still on the queue
    written = []
    collection = Collector("job-i", broker.queue("output"), manifests, leases,
                           on_results=written.append, quiet_seconds=0).run(timeout=3)
    assert collection.complete and collection.recovered == 1
    records = {r["line"]: r for b in written for r in b.records()}
    assert records[3]["status"] == FAILED and records[3]["stdout"] == "out 3"
    assert records[3]["worker"] == "w9"


def test_a_bundle_sent_twice_runs_once_and_is_collected_once(write_workload, broker, tmp_path,
                                                            wait_until):
    ran = tmp_path / "ran.txt"
    path = write_workload("".join(f"echo {n} >> {ran}\n" for n in range(1, 41)))
    manifests, leases = MemoryManifests(), MemoryLeaseStore()
    # The upload delivered twice, the first split dying after its sends, before its end.
    first = submit_workload(Workload(str(path)), "job-j", 1.0, broker.queue("input"),
                            "output", manifests, bundle_ms=1e9, bundle_size=7)
    manifests.save(replace(first, status=SUBMITTING))
    manifest = submit_workload(Workload(str(path)), "job-j", 1.0, broker.queue("input"),
                               "output", manifests, bundle_ms=1e9, bundle_size=7)
    assert manifest.tasks == 40 and len(broker.queue("input")) == 2 * manifest.bundles
    # Delivered once more after the split ended: the same job, nothing sent again.
    assert submit_workload(Workload(str(path)), "job-j", 1.0, broker.queue("input"), "output",
                           manifests, bundle_ms=1e9, bundle_size=7) == manifest
    assert len(broker.queue("input")) == 2 * manifest.bundles
    worker = Worker(broker.queue("input"), broker, leases,
                    WorkerConfig(worker_id="w1", threads=3, wait_seconds=1, visibility_seconds=4))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        collection = Collector("job-j", broker.queue("output"), manifests, leases).run(timeout=60)
        # Every copy handled, run or replayed, before the file is read.
        wait_until(lambda: len(broker.queue("input")) == 0, timeout=60, what="input queue empty")
    finally:
        worker.stop()
        thread.join(30)
    assert collection.complete and collection.summary.counts[SUCCEEDED] == 40
    assert sorted(ran.read_text().split()) == sorted(str(n) for n in range(1, 41))


def test_a_bundle_whose_results_came_only_in_part_is_completed_from_the_lease_store(broker):
    leases = MemoryLeaseStore()
    manifests = MemoryManifests()
    manifests.save(_manifest("job-k", 3, 1))
    assert leases.claim("job-k#0", "w9/1", 60).outcome == "CLAIMED"
    packed, _ = pack_results([_result(n) for n in (1, 2, 3)], leases.max_results_bytes)
    assert leases.complete("job-k#0", "w9/1", packed)
    _post(broker.queue("output"), "job-k", 0, [1, 2])  # the part holding line 3 was taken
    collection = Collector("job-k", broker.queue("output"), manifests, leases,
                           quiet_seconds=0).run(timeout=3)
    assert collection.complete and collection.recovered == 1


def test_a_100000_sleep_0_job_travels_in_bundles_of_thousands_that_fit_a_message_and_a_lease(
        write_workload, broker):
    path = write_workload("sleep 0\n" * 100_000)
    manifest = submit_workload(Workload(str(path)), "job-big", 9.0, broker.queue("input"),
                               "output", MemoryManifests())
    messages = _drain(broker.queue("input"))
    assert manifest.tasks == 100_000 and manifest.bundles == len(messages) <= 20
    bundles = [decode_bundle(m.body)[0] for m in messages]
    assert all(len(b.tasks) >= 5000 for b in bundles)
    assert all(len(m.body.encode()) <= SQS_MAX_MESSAGE_BYTES for m in messages)
    # The results of the largest bundle fit one lease item uncut, and results messages.
    biggest = max(bundles, key=lambda b: len(b.tasks))
    start = 1.7e9
    results = [(line, command, SUCCEEDED, 0, None, start + i * 1e-5, start + i * 1e-5 + 2e-6,
                "", "") for i, (line, command) in enumerate(biggest.tasks)]
    packed, kept = pack_results(results, LEASE_RESULTS_MAX_BYTES)
    assert kept is results and len(packed) < LEASE_RESULTS_MAX_BYTES / 2
    bodies = results_bodies(ResultBundle("job-big", biggest.seq, results, 9.0, "w1"))
    assert all(len(b) <= SQS_DEFAULT_MAX_MESSAGE_BYTES for b in bodies) and len(bodies) <= 4


@pytest.mark.parametrize(("line", "per_bundle"), [("true", 100), ("sleep 10", 200)])
def test_shell_commands_and_long_sleeps_still_travel_in_bundles_of_two_seconds_work(
        write_workload, broker, line, per_bundle):
    path = write_workload(f"{line}\n" * 3000)
    submit_workload(Workload(str(path)), "job-work", 9.0, broker.queue("input"), "output",
                    MemoryManifests())
    sizes = sorted(len(b.tasks) for b in _bundles(broker.queue("input")))
    assert sizes[-1] == per_bundle  # as with 256-task bundles: the work budget closes them
    assert sum(sizes) == 3000
