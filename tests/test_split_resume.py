"""The resumable split: a Lambda that runs out of time or fails mid-split continues from its
progress record, and a split that failed or stopped is reported by `collect` and `status`."""

from __future__ import annotations

import collections
import time

import boto3
import pytest
from submit_helpers import REGION, make_bucket

from cloudkon.codec import decode_bundle
from cloudkon.errors import AwsError, SplitPaused
from cloudkon.limits import SPLIT_MAX_FAILURES, SPLIT_STALL_SECONDS
from submitter.deployment import Deployment
from submitter.manifest import REJECTED, SUBMITTED, SUBMITTING, Manifest, SplitProgress
from submitter.submit import handle_upload

BUNDLE_MS = 40  # 2 shell commands a bundle once the ramp is done: many small bundles


def _upload(config, job_id: str, body: str) -> tuple[str, str]:
    bucket = make_bucket(config)
    key = f"workloads/{job_id}/w.txt"
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=body.encode())
    return bucket, key


def _sent(config, give_back: bool = False) -> list:
    """Every bundle on the input queue (each copy), as decoded; with ``give_back``, the
    messages are made visible again afterwards, for workers."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName=config.input_queue)["QueueUrl"]
    found, receipts = [], []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=300, WaitTimeSeconds=0).get("Messages"):
        found += [decode_bundle(m["Body"])[0] for m in batch]
        receipts += [m["ReceiptHandle"] for m in batch]
    for i in range(0, len(receipts) if give_back else 0, 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": 0}
            for n, r in enumerate(receipts[i:i + 10])])
    return found


def _record(deployment: Deployment, job_id: str):
    return deployment.manifests.load_record(job_id)


class FailingQueue:
    """The input queue, whose send fails from the ``fail_from``-th call on (1-based)."""

    def __init__(self, queue, fail_from: int) -> None:
        self.queue = queue
        self.name = queue.name
        self.url = queue.url
        self.fail_from = fail_from
        self.calls = 0

    def send_batch(self, bodies):
        self.calls += 1
        if self.calls >= self.fail_from:
            raise AwsError("send to the input queue: InternalError: injected", "InternalError")
        return self.queue.send_batch(bodies)


def _check_bundles(bundles: list, tasks: int) -> dict[int, list]:
    """Each bundle key's copies hold the same tasks, and every task is in one key."""
    by_seq: dict[int, list] = collections.defaultdict(list)
    for b in bundles:
        by_seq[b.seq].append(tuple(b.tasks))
    assert sorted(by_seq) == list(range(len(by_seq)))
    for seq, copies in by_seq.items():
        assert len(set(copies)) == 1, f"bundle {seq} was sent with different tasks"
    lines = [line for copies in by_seq.values() for line, _ in copies[0]]
    assert sorted(lines) == list(range(1, tasks + 1))
    return by_seq


def test_a_split_out_of_time_stops_records_its_progress_and_its_continuation_ends_it(
        provisioned, cloudkon):
    tasks = 120
    bucket, key = _upload(provisioned, "job-pause-1",
                          "".join(f"echo {n}\n" for n in range(1, tasks + 1)))
    deployment = Deployment(provisioned)
    asked = []
    continued = []

    def out_of_time() -> bool:  # as a Lambda's remaining time runs low after 6 batches
        asked.append(1)
        return len(asked) > 3

    assert handle_upload(deployment, bucket, key, bundle_ms=BUNDLE_MS, should_stop=out_of_time,
                         continue_split=lambda: continued.append(1)) is None
    assert continued == [1]
    record = _record(deployment, "job-pause-1")
    assert record.manifest.status == SUBMITTING
    first = _sent(provisioned)
    assert record.split.bundles == len(first) > 0  # every bundle recorded, none beyond
    assert record.split.line == max(line for b in first for line, _ in b.tasks)
    status = cloudkon("status", "--prefix", provisioned.prefix, "job-pause-1")
    assert status.returncode == 0, status.stderr
    assert (f"{record.split.tasks:,} tasks in {record.split.bundles:,} bundles sent so far"
            in status.stdout)

    # The continuation: the same event, a Lambda with time enough.
    manifest = handle_upload(deployment, bucket, key, bundle_ms=BUNDLE_MS)
    assert manifest.status == SUBMITTED and manifest.tasks == tasks
    bundles = first + _sent(provisioned)
    by_seq = _check_bundles(bundles, tasks)
    assert len(bundles) == len(by_seq) == manifest.bundles  # nothing sent twice

    # The bundles are those of a split never stopped (the same keys, the same tasks).
    bucket2, key2 = _upload(provisioned, "job-pause-2",
                            "".join(f"echo {n}\n" for n in range(1, tasks + 1)))
    whole = handle_upload(deployment, bucket2, key2, bundle_ms=BUNDLE_MS)
    assert {b.seq: tuple(b.tasks) for b in _sent(provisioned)} == {
        seq: copies[0] for seq, copies in by_seq.items()} and whole.bundles == manifest.bundles


def test_a_split_that_fails_mid_way_is_continued_from_its_record_and_every_task_runs_once(
        provisioned, start_worker, cloudkon, tmp_path):
    tasks = 60
    runs = tmp_path / "runs"
    bucket, key = _upload(provisioned, "job-fail-1",
                          "".join(f"echo {n} >> {runs}\n" for n in range(1, tasks + 1)))
    deployment = Deployment(provisioned, senders=2)
    real = deployment.input_queue
    deployment.input_queue = FailingQueue(real, fail_from=2)
    with pytest.raises(AwsError):
        handle_upload(deployment, bucket, key, bundle_ms=BUNDLE_MS)
    record = _record(deployment, "job-fail-1")
    assert record.manifest.status == SUBMITTING
    assert record.split.bundles > 0 and record.split.failures == 1
    assert "injected" in record.split.error
    recorded = record.split.bundles

    deployment.input_queue = real  # the Lambda's retry of the event
    manifest = handle_upload(deployment, bucket, key, bundle_ms=BUNDLE_MS)
    assert manifest.status == SUBMITTED and manifest.tasks == tasks
    bundles = _sent(provisioned, give_back=True)
    by_seq = _check_bundles(bundles, tasks)
    assert all(seq >= recorded for seq, copies in by_seq.items() if len(copies) > 1)
    assert all(len(copies) == 1 for seq, copies in by_seq.items() if seq < recorded)

    # The workers run every task once, copies of bundles and all.
    start_worker(provisioned, "--threads", 4, "--visibility-timeout", 4, "--wait-seconds", 1)
    proc = cloudkon("collect", "--prefix", provisioned.prefix, "--bucket-suffix", "moto",
                    "job-fail-1", "--timeout", "90")
    assert proc.returncode == 0, proc.stderr
    assert sorted(map(int, runs.read_text().split())) == list(range(1, tasks + 1))


def test_a_split_that_fails_every_time_is_given_up_and_collect_and_status_say_why(
        provisioned, cloudkon):
    bucket, key = _upload(provisioned, "job-broken-1", "echo a\necho b\n")
    deployment = Deployment(provisioned)
    deployment.input_queue = FailingQueue(deployment.input_queue, fail_from=1)
    for _ in range(SPLIT_MAX_FAILURES):
        with pytest.raises(AwsError):
            handle_upload(deployment, bucket, key)
    record = _record(deployment, "job-broken-1")
    assert record.manifest.status == REJECTED

    started = time.monotonic()
    proc = cloudkon("collect", "--prefix", provisioned.prefix, "--bucket-suffix", "moto",
                    "job-broken-1")
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cloudkon: error: job job-broken-1: its"
                                                   " split failed: the split failed 3 times")
    assert "injected" in lines[0]
    status = cloudkon("status", "--prefix", provisioned.prefix, "job-broken-1")
    assert status.returncode == 1
    assert "failed split" in status.stdout and "injected" in status.stdout


def test_a_split_whose_record_stopped_changing_is_reported_failed(provisioned, cloudkon):
    deployment = Deployment(provisioned)
    long_ago = time.time() - SPLIT_STALL_SECONDS - 60
    manifests = deployment.manifests
    assert manifests.start(Manifest("job-stalled-1", SUBMITTING, "s3://b/workloads/x/w.txt",
                                    long_ago, split_at=long_ago, digest="0" * 64)) is None
    assert manifests.save_progress("job-stalled-1", SplitProgress(
        bundles=12, tasks=340, line=351, at=long_ago + 5, invocations=1))

    proc = cloudkon("collect", "--prefix", provisioned.prefix, "--bucket-suffix", "moto",
                    "job-stalled-1")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cloudkon: error: job job-stalled-1: its split failed: no"
                               " progress for ")
    assert "12 bundles (340 tasks, to line 351) sent" in lines[0]
    status = cloudkon("status", "--prefix", provisioned.prefix, "job-stalled-1")
    assert status.returncode == 1
    assert "failed split" in status.stdout and "no progress for" in status.stdout


def test_a_lambda_without_time_to_send_anything_leaves_the_split_to_the_retry(provisioned):
    bucket, key = _upload(provisioned, "job-notime-1", "echo a\n")
    deployment = Deployment(provisioned)
    continued = []
    with pytest.raises(SplitPaused):
        handle_upload(deployment, bucket, key, should_stop=lambda: True,
                      continue_split=lambda: continued.append(1))
    assert continued == []  # no progress: no self-invocation loop; Lambda's retry goes on
    assert _record(deployment, "job-notime-1").split.invocations == 1
    manifest = handle_upload(deployment, bucket, key)
    assert manifest.status == SUBMITTED and manifest.tasks == 1


class FakeContext:
    """A Lambda context whose remaining time drops under the stop margin after a few asks."""

    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cloudkon-dev-split"

    def __init__(self, asks_in_time: int) -> None:
        self.asks = 0
        self.asks_in_time = asks_in_time

    def get_remaining_time_in_millis(self) -> int:
        self.asks += 1
        return 300_000 if self.asks <= self.asks_in_time else 30_000


def test_a_lambda_whose_continuation_cannot_be_invoked_raises_for_the_retry(
        provisioned, monkeypatch):
    from submitter import s3_lambda

    monkeypatch.setenv("CLOUDKON_PREFIX", provisioned.prefix)
    # The Lambda's bundling: 5 batches of bundles, of which the first two are sent before
    # its time runs out (the last two of a split are held back for its small end).
    tasks = 5000
    bucket, key = _upload(provisioned, "job-invoke-1", "".join(f"echo {n}\n" for n in
                                                                range(1, tasks + 1)))
    event = {"Records": [{"s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}
    # The function does not exist on this endpoint: the invoke fails, and the error has
    # Lambda retry the event.
    with pytest.raises(SplitPaused, match="continuation could not be invoked"):
        s3_lambda.on_upload(bucket, key, FakeContext(asks_in_time=4), event)
    record = Deployment(provisioned).manifests.load_record("job-invoke-1")
    assert record.manifest.status == SUBMITTING and record.split.bundles > 0
    manifest = s3_lambda.on_upload(bucket, key, FakeContext(asks_in_time=10**6), event)
    assert manifest.status == SUBMITTED and manifest.tasks == tasks
    _check_bundles(_sent(provisioned), tasks)


class _Bodies:
    """A queue that keeps what is sent to it, in order (a split's in-memory input queue)."""

    name = url = "input"

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send_batch(self, bodies) -> None:
        self.bodies += bodies


def test_a_split_stopped_anywhere_and_continued_sends_each_bundle_key_with_its_own_tasks(
        tmp_path):
    from cloudkon.workload import Workload
    from submitter.split import split

    tasks = 260  # with bad and blank lines among them, the small end included
    lines = [("echo {n}" if n % 37 else "sleep -1") if n % 11 else "" for n in
             range(1, tasks + 1)]
    path = tmp_path / "w.txt"
    path.write_text("\n".join(lines) + "\n")
    whole = _Bodies()
    report = split(Workload(str(path)), "job-r", whole, "out", 100, BUNDLE_MS, senders=1)
    expected = {b.seq: b.tasks for b in (decode_bundle(x)[0] for x in whole.bodies)}
    assert len(whole.bodies) > 4  # the test stops before, within and after the small end

    for asks in range(len(whole.bodies) // 10 + 3):
        sent, progress = _Bodies(), []
        left = iter(range(asks))
        first = split(Workload(str(path)), "job-r", sent, "out", 100, BUNDLE_MS, senders=1,
                      on_progress=progress.append,
                      should_stop=lambda: next(left, None) is None)
        resume = progress[-1] if first.paused else None
        if resume is not None:
            again = split(Workload(str(path)), "job-r", sent, "out", 100, BUNDLE_MS,
                          senders=1, resume=resume)
            assert (again.tasks, again.bad_line_count) == (report.tasks,
                                                          report.bad_line_count), asks
        got = [decode_bundle(x)[0] for x in sent.bodies]
        for b in got:  # a bundle key sent twice is the same bundle
            assert b.tasks == expected[b.seq], f"stopped after {asks} batches: bundle {b.seq}"
        assert {b.seq for b in got} == set(expected), asks


class _FailingBodies(_Bodies):
    """Keeps what is sent, until its ``fail_from``-th send (1-based), which fails."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from, self.calls = fail_from, 0

    def send_batch(self, bodies) -> None:
        self.calls += 1
        if self.calls == self.fail_from:
            raise AwsError("send to the input queue: InternalError: injected", "InternalError")
        super().send_batch(bodies)


@pytest.mark.parametrize("tasks", [95, 130])
def test_a_split_failing_at_any_send_and_continued_sends_each_bundle_key_with_its_own_tasks(
        tmp_path, tasks):
    from cloudkon.workload import Workload
    from submitter.split import split

    path = tmp_path / "w.txt"
    path.write_text("".join(f"echo {n}\n" for n in range(1, tasks + 1)))
    whole = _Bodies()
    split(Workload(str(path)), "job-f", whole, "out", 100, BUNDLE_MS, senders=1)
    expected = {b.seq: b.tasks for b in (decode_bundle(x)[0] for x in whole.bodies)}

    for fail_from in range(1, (len(whole.bodies) + 9) // 10 + 1):  # each batch of 10
        sent, progress = _FailingBodies(fail_from), []
        with pytest.raises(AwsError):
            split(Workload(str(path)), "job-f", sent, "out", 100, BUNDLE_MS, senders=1,
                  on_progress=progress.append)
        split(Workload(str(path)), "job-f", sent, "out", 100, BUNDLE_MS, senders=1,
              resume=progress[-1])
        got = [decode_bundle(x)[0] for x in sent.bodies]
        for b in got:
            assert b.tasks == expected[b.seq], f"failed at send {fail_from}: bundle {b.seq}"
        assert {b.seq for b in got} == set(expected), fail_from
