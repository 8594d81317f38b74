"""A job id names one workload (docs/design.md, "Job identity"): another workload under an
existing id is refused, with one line and exit 2, by `submit --direct` before anything is
sent, by `submit` before the upload, and by the Lambda, which records the refused upload;
the same workload under the same id is the same job, split once, each task run once."""

from __future__ import annotations

import hashlib
import re

import boto3
import pytest
from aws_fixtures import messages_left
from submit_helpers import BUCKET_SUFFIX, REGION, chalice_project, deliver_upload, make_bucket

from submitter.manifest import SUBMITTED, DynamoManifests

CONFLICT = re.compile(r"cloudkon: error: job nightly exists with another workload"
                      r" \(sha256 [0-9a-f]{12}\.\.\.\); choose another --job-id")


def _aws(config) -> tuple[str, ...]:
    return ("--prefix", config.prefix, "--bucket-suffix", BUCKET_SUFFIX)


def _record(config, job_id: str):
    return DynamoManifests(boto3.client("dynamodb", region_name=REGION),
                           config.lease_table).load_record(job_id)


def _keys(config) -> list[str]:
    page = boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket=config.bucket(BUCKET_SUFFIX), Prefix="workloads/")
    return sorted(o["Key"] for o in page.get("Contents", ()))


@pytest.fixture
def aws(provisioned):
    make_bucket(provisioned)
    return provisioned


def test_submit_direct_refuses_another_workload_under_an_existing_job_id(
        aws, cloudkon, write_workload, sqs):
    first = write_workload("echo a\necho b\n", name="first.txt")
    other = write_workload("echo SECOND-X\n", name="other.txt")
    assert cloudkon("submit", *_aws(aws), "--direct", "--job-id", "nightly", first).returncode == 0
    sent = messages_left(sqs, aws.input_queue)

    proc = cloudkon("submit", *_aws(aws), "--direct", "--job-id", "nightly", other)
    assert proc.returncode == 2 and CONFLICT.fullmatch(proc.stderr.strip()), proc.stderr
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert digest[:12] in proc.stderr and proc.stdout == ""
    assert messages_left(sqs, aws.input_queue) == sent  # nothing sent
    manifest = _record(aws, "nightly").manifest
    assert manifest.digest == digest and manifest.source == str(first) and manifest.tasks == 2


def test_submit_refuses_another_workload_before_uploading_it(aws, cloudkon, write_workload,
                                                             tmp_path, sqs):
    first = write_workload("echo a\n", name="first.txt")
    assert cloudkon("submit", *_aws(aws), "--job-id", "nightly", first).returncode == 0
    deliver_upload(chalice_project(tmp_path / "chalice", aws), aws.bucket(BUCKET_SUFFIX),
                   "workloads/nightly/first.txt")
    assert _record(aws, "nightly").manifest.status == SUBMITTED

    other = write_workload("echo SECOND-X\n", name="other.txt")
    proc = cloudkon("submit", *_aws(aws), "--job-id", "nightly", "--wait", other)
    assert proc.returncode == 2 and CONFLICT.fullmatch(proc.stderr.strip()), proc.stderr
    assert _keys(aws) == ["workloads/nightly/first.txt"]  # not uploaded
    assert messages_left(sqs, aws.input_queue) == 1


def test_the_lambda_refuses_another_upload_under_the_id_and_records_why(
        aws, cloudkon, write_workload, tmp_path, sqs):
    first = write_workload("echo a\necho b\necho c\n", name="first.txt")
    assert cloudkon("submit", *_aws(aws), "--job-id", "nightly", first).returncode == 0
    project = chalice_project(tmp_path / "chalice", aws)
    bucket = aws.bucket(BUCKET_SUFFIX)
    deliver_upload(project, bucket, "workloads/nightly/first.txt")
    sent = messages_left(sqs, aws.input_queue)
    # Another tool (or a client that raced the first split) uploads another workload.
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=bucket, Key="workloads/nightly/other.txt", Body=b"echo SECOND-X\n")
    deliver_upload(project, bucket, "workloads/nightly/other.txt", times=2)

    assert messages_left(sqs, aws.input_queue) == sent  # no bundle of it
    record = _record(aws, "nightly")
    assert record.manifest.tasks == 3 and record.manifest.source.endswith("/first.txt")
    assert len(record.refused) == 1  # delivered twice, recorded once
    refused = record.refused[0]
    assert refused.source == f"s3://{bucket}/workloads/nightly/other.txt"
    assert refused.digest == hashlib.sha256(b"echo SECOND-X\n").hexdigest()
    assert CONFLICT.fullmatch("cloudkon: error: " + refused.reason)
    status = cloudkon("status", *_aws(aws), "nightly")
    assert (f"  refused    s3://{bucket}/workloads/nightly/other.txt: job nightly exists with"
            " another workload") in status.stdout, status.stdout
    collected = cloudkon("collect", *_aws(aws), "nightly", "--timeout", "0")
    assert "an upload under its id was refused: s3://" in collected.stderr, collected.stderr


def test_the_same_workload_twice_under_one_id_is_one_job_run_once(
        aws, cloudkon, write_workload, tmp_path, start_worker, sqs):
    ran = tmp_path / "ran.txt"
    workload = write_workload("".join(f"echo {n} >> {ran}\n" for n in range(1, 6)),
                              name="w.txt")
    direct = ("submit", *_aws(aws), "--direct", "--job-id", "nightly", workload)
    assert cloudkon(*direct).returncode == 0
    sent = messages_left(sqs, aws.input_queue)
    again = cloudkon(*direct)
    assert again.returncode == 0 and again.stdout.strip() == "nightly"
    assert "job nightly: submitted before with this workload; nothing sent again" in again.stderr
    uploaded = cloudkon("submit", *_aws(aws), "--job-id", "nightly", workload)
    assert uploaded.returncode == 0 and "nothing uploaded again" in uploaded.stderr
    assert messages_left(sqs, aws.input_queue) == sent and _keys(aws) == []

    start_worker(aws, "--threads", 2, "--wait-seconds", 1)
    out = tmp_path / "out.jsonl"
    collected = cloudkon("collect", *_aws(aws), "nightly", "-o", out, "--timeout", "120",
                         timeout=180)
    assert collected.returncode == 0, collected.stderr
    assert sorted(ran.read_text().split()) == ["1", "2", "3", "4", "5"]
    assert len(out.read_text().splitlines()) == 5


def test_submit_refuses_another_workload_while_the_first_upload_waits_for_its_split(
        aws, cloudkon, write_workload):
    first = write_workload("echo a\n", name="w.txt")
    assert cloudkon("submit", *_aws(aws), "--job-id", "nightly", first).returncode == 0
    again = cloudkon("submit", *_aws(aws), "--job-id", "nightly", first)
    assert again.returncode == 0 and "nothing uploaded again" in again.stderr, again.stderr

    other = write_workload("echo SECOND-X\n", name="w2.txt")
    proc = cloudkon("submit", *_aws(aws), "--job-id", "nightly", other)
    assert proc.returncode == 2 and CONFLICT.fullmatch(proc.stderr.strip()), proc.stderr
    assert _keys(aws) == ["workloads/nightly/w.txt"]
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=aws.bucket(BUCKET_SUFFIX), Key="workloads/nightly/w.txt")["Body"].read()
    assert body == b"echo a\n"


def test_submit_wait_refuses_to_collect_a_job_split_from_another_workload():
    from cloudkon.backends.memory import MemoryBroker
    from cloudkon.errors import JobConflictError
    from submitter.collect import Collector
    from submitter.manifest import Manifest, MemoryManifests

    broker = MemoryBroker()
    broker.create("output")
    manifests = MemoryManifests()
    manifests.save(Manifest("nightly", SUBMITTED, "s3://b/workloads/nightly/first.txt", 9.0,
                            tasks=1, bundles=1, last_line=1, digest="ab" * 32))
    # Our upload raced another under the same id, whose split came first.
    with pytest.raises(JobConflictError, match=r"job nightly exists with another workload"
                                               r" \(sha256 abababababab\.\.\.\)"):
        Collector("nightly", broker.queue("output"), manifests, digest="cd" * 32).run(timeout=1)
