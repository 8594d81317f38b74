"""Bounded re-execution: a worker stores its finished tasks' results in the bundle's lease
within RESULTS_STORE_SECONDS, so a kill -9 leaves to the takeover only the tasks finished in
the last interval and the one running (a takeover skips stored results: see
test_worker_aws.py's takeover test); and `collect` says when the bundles it waits for are
held by a worker that stopped beating."""

from __future__ import annotations

import time

from conftest import wait_until
from test_worker_aws import FAST, send

from cloudkon.backends.dynamodb import DynamoWorkerRegistry
from cloudkon.codec import unpack_results
from cloudkon.limits import RESULTS_STORE_SECONDS
from cloudkon.model import Bundle
from submitter.manifest import SUBMITTING, DynamoManifests, Manifest

# Time the worker may take beyond the interval: its heartbeat thread's tick, the write.
SLACK_SECONDS = 1.5


def _finished(log) -> dict[int, float]:
    """Task line -> when its first run finished, from the runs file."""
    done: dict[int, float] = {}
    for text in log.read_text().splitlines() if log.exists() else ():
        line, at = text.split()
        done.setdefault(int(line), float(at))
    return done


def test_a_worker_killed_mid_bundle_has_stored_all_but_the_last_interval(
        provisioned, sqs, dynamodb, start_worker, tmp_path):
    config = provisioned
    log = tmp_path / "runs"
    bundle = Bundle("store", 0, [(n, f"/bin/sleep 0.25; echo {n} $(date +%s.%N) >> {log}")
                                 for n in range(1, 41)])
    send(sqs, config, bundle)
    # A 30 s visibility: the heartbeat comes every 10 s, after the kill. Results stored
    # before are the store's.
    worker = start_worker(config, "--threads", 1, "--visibility-timeout", 30, *FAST)
    def stored() -> set[int]:  # read raw: the moto server applies an update's SETs in turn
        item = dynamodb.get_item(TableName=config.lease_table, Key={"pk": {"S": "store#0"}},
                                 ConsistentRead=True).get("Item", {})
        results = item.get("results", {}).get("B")
        return {r[0] for r in unpack_results(bytes(results))} if results else set()

    wait_until(lambda: len(stored()) >= 2, what="results stored before the first heartbeat")
    first_store = set(stored())
    # Stored within seconds of the first tasks, not at the heartbeat (10 s, ~35 tasks in).
    assert len(first_store) <= 20, len(first_store)
    wait_until(lambda: len(_finished(log)) >= len(first_store) + 3, what="more tasks done")
    worker.kill()
    killed_at = time.time()

    finished = _finished(log)
    kept = stored()
    assert first_store <= kept <= set(finished)
    unstored = set(finished) - kept  # what a takeover runs again, with the running task
    assert len(finished) < 40  # killed mid-bundle
    late = {n: round(killed_at - finished[n], 2) for n in unstored
            if finished[n] < killed_at - RESULTS_STORE_SECONDS - SLACK_SECONDS}
    assert not late, f"tasks finished long before the kill (s before it) not stored: {late}"


def test_collect_names_the_bundles_held_by_a_worker_that_stopped_beating(
        provisioned, sqs, dynamodb, start_worker, tmp_path, cloudkon):
    config = provisioned
    # The job as `submit --direct` leaves it: its record, then its one bundle.
    manifests = DynamoManifests(dynamodb, config.lease_table)
    manifests.start(Manifest("quiet-1", SUBMITTING, str(tmp_path / "w.txt"), time.time()))
    manifests.save(Manifest("quiet-1", SUBMITTING, str(tmp_path / "w.txt"), time.time())
                   .done(tasks=1, bundles=1, last_line=1))
    send(sqs, config, Bundle("quiet-1", 0, [(1, "/bin/sleep 60")]))
    worker = start_worker(config, "--threads", 1, "--visibility-timeout", 3, "--worker-id",
                          "w-12", *FAST)
    registry = DynamoWorkerRegistry(dynamodb, config.lease_table)
    def claimed() -> bool:  # read raw: the moto server applies an update's SETs one by one
        item = dynamodb.get_item(TableName=config.lease_table, Key={"pk": {"S": "quiet-1#0"}},
                                 ConsistentRead=True).get("Item", {})
        return "status" in item and "owner" in item

    wait_until(lambda: claimed() and registry.record("w-12"),
               what="the bundle claimed, the worker registered")
    worker.kill()
    wait_until(lambda: registry.record("w-12").stale(time.time()),
               what="the worker's record stale")

    proc = cloudkon("collect", "--prefix", config.prefix, "quiet-1", "--timeout", 1)
    assert proc.returncode == 1, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("cloudkon: error:")]
    assert len(error) == 1, proc.stderr
    assert "1 of 1 tasks have no result: quiet-1:1; 1 bundle held by worker w-12, which" \
           " stopped beating" in error[0], proc.stderr
    assert "it will be taken over" in error[0], proc.stderr
