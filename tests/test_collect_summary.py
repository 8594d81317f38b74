"""The summary of a remote job as `cloudkon collect` makes it: workers and their threads,
the wall time from the split's start, the efficiency of a sleep workload. The collector on
the in-memory backends, the result messages as the workers' codec encodes them."""

from __future__ import annotations

import pytest

from cloudkon.backends.memory import MemoryBroker
from cloudkon.codec import WireCodec
from cloudkon.model import SUCCEEDED, ResultBundle
from submitter.collect import Collector
from submitter.manifest import SUBMITTED, Manifest, MemoryManifests

T0 = 1_800_000_000.0


def _collect(manifest: Manifest, bundles: list[tuple[ResultBundle, int]]):
    broker = MemoryBroker()
    broker.create("output")
    outbox = broker.queue("output")
    for bundle, threads in bundles:
        outbox.send_batch(WireCodec(worker_threads=threads).results_bodies(bundle))
    manifests = MemoryManifests()
    manifests.save(manifest)
    return Collector(manifest.job_id, outbox, manifests).run(timeout=5)


def _sleeps(job_id: str, seq: int, first_line: int, worker: str, start: float) -> ResultBundle:
    """Two `sleep 1000` tasks run one after the other by ``worker`` from ``start``."""
    results = [(first_line + i, "sleep 1000", SUCCEEDED, 0, None, start + i, start + i + 1.0,
                "", "") for i in range(2)]
    return ResultBundle(job_id, seq, results, sent_at=T0 + 100.0, worker=worker)


def test_an_uploaded_job_counts_from_its_split_and_names_workers_and_threads():
    # Uploaded at T0, split 100 s later (a Lambda that came late), run by two workers of
    # 4 threads each, one bundle on each of 4 threads of each worker: 16 s of sleeps in 2 s.
    manifest = Manifest("job-s", SUBMITTED, "s3://b/workloads/job-s/w.txt", T0, tasks=16,
                        bundles=8, last_line=16, split_at=T0 + 100.0)
    bundles = [(_sleeps("job-s", seq, 2 * seq + 1, f"host-{seq % 2}:1", T0 + 100.0), 4)
               for seq in range(8)]
    collection = _collect(manifest, bundles)
    summary = collection.summary
    assert collection.complete
    assert (summary.workers, summary.threads) == (2, 8)
    assert summary.wall_seconds == 2.0
    assert collection.split_wait == 100.0 and collection.submit_to_last == 102.0
    text = summary.to_text()
    assert "throughput 8.0 tasks/s with 2 workers, 8 threads" in text
    assert "  efficiency 100.0%  (ideal time / actual time)" in text.splitlines()
    assert summary.to_dict()["threads"] == 8


def test_workers_that_do_not_say_their_threads_are_counted_as_before():
    manifest = Manifest("job-o", SUBMITTED, "/tmp/w.txt", T0, tasks=2, bundles=1, last_line=2,
                        split_at=T0)
    collection = _collect(manifest, [(_sleeps("job-o", 0, 1, "old:1", T0), 0)])
    assert collection.split_wait is None  # split here (--direct): no upload waited
    assert collection.summary.threads == 0
    assert "tasks/s with 1 worker\n" in collection.summary.to_text() + "\n"


def test_a_second_collect_reads_back_the_same_queued_times_and_latencies():
    from cloudkon.backends.memory import MemoryLeaseStore
    from cloudkon.codec import pack_results
    from cloudkon.model import bundle_key

    # The first collect took the results from the queue; the second finds them only in the
    # lease store, where the worker stored them with the bundle's sent_at.
    manifest = Manifest("job-q", SUBMITTED, "s3://b/workloads/job-q/w.txt", T0, tasks=2,
                        bundles=1, last_line=2, split_at=T0 + 1.0)
    bundle = _sleeps("job-q", 0, 1, "host:1", T0 + 101.0)
    leases = MemoryLeaseStore()
    key = bundle_key("job-q", 0)
    leases.claim(key, "host:1/x-1", 60.0)
    packed, _ = pack_results(bundle.results, leases.max_results_bytes)
    assert leases.complete(key, "host:1/x-1", packed, bundle.sent_at)

    broker = MemoryBroker()
    broker.create("output")
    manifests = MemoryManifests()
    manifests.save(manifest)
    records = []
    collector = Collector("job-q", broker.queue("output"), manifests, leases,
                          on_results=lambda b: records.extend(b.records()), quiet_seconds=0)
    collection = collector.run(timeout=5)
    assert collection.complete and collection.recovered == 2
    assert [r["queued"] for r in records] == [T0 + 100.0, T0 + 100.0]
    assert collection.summary.to_dict()["latency_ms"]["p50"] == \
        pytest.approx(2000.0, rel=0.01)
