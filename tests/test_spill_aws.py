"""Large output end to end on the moto server: a real `cloudkon worker` runs a bundle whose
results hold 5 MB binary outputs (bounded tails) and medium outputs that together exceed
both an SQS message (256 KiB) and a DynamoDB item (400 KB): they spill to the workload
bucket, `collect` reads them back transparently, nothing reaches the dead-letter queue,
and a spilled object that is gone is reported in one warning, never a traceback."""

from __future__ import annotations

import base64
import dataclasses
import os

import boto3
import pytest
from aws_fixtures import REGION, messages_left
from submit_helpers import BUCKET_SUFFIX, make_bucket, read_results

from cloudkon.limits import DEFAULT_TASKS_PER_BUNDLE, MAX_TAIL_BYTES, TAIL_HELD_BUNDLES
from cloudkon.model import SUCCEEDED
from submitter.collect import Collector
from submitter.deployment import Deployment

MEDIUM = 9  # outputs of 64,000 characters: 576 KB in a message, over 360 KiB packed
BLOB_BYTES = 5_000_000
# `submit` makes bundles of 100 commands (DEFAULT_TASKS_PER_BUNDLE), and cuts the job's
# last TAIL_HELD_BUNDLES bundles small: the large outputs share the first bundle, and more
# than those last bundles' worth of short commands follow them.
RAMP = 15
BIG = RAMP + 1  # the line of the first large output
TRAIL = (TAIL_HELD_BUNDLES + 1) * DEFAULT_TASKS_PER_BUNDLE
ESCAPED = RAMP + 2 + MEDIUM + 1  # the line whose output JSON escapes: 6 bytes a byte
TASKS = RAMP + 3 + MEDIUM + TRAIL


@pytest.fixture
def spilling(provisioned, start_worker, wait_until):
    """The prefix's resources and bucket, and one worker that knows the bucket."""
    make_bucket(provisioned)
    worker = start_worker(provisioned, "--threads", 2, "--wait-seconds", 1,
                          "--visibility-timeout", 10, "--tail-bytes", MAX_TAIL_BYTES,
                          "--bucket-suffix", BUCKET_SUFFIX)
    wait_until(lambda: "serving queue" in worker.log, timeout=60, what="the worker serving")
    return provisioned, worker


def _workload(blob=None) -> str:
    """RAMP short tasks, then (with ``blob``) two 5 MB binary outputs, then MEDIUM medium
    ones and one that escapes, then TRAIL short ones: the large outputs share one bundle,
    whose results are split over messages, but for the one that escapes, spilled."""
    lines = ["true"] * RAMP
    if blob is not None:
        lines += [f"cat {blob}", f"head -c {BLOB_BYTES} /dev/urandom"]
    lines += ["head -c 48000 /dev/urandom | base64 -w0"] * MEDIUM  # 64,000 characters each
    # 60,000 control characters: a result of 360 KB in JSON, over a message alone.
    lines += ["head -c 60000 /dev/zero | tr '\\0' '\\1'"]
    lines += ["true"] * TRAIL
    return "\n".join(lines) + "\n"


def _spilled_keys(config, job_id: str) -> list[str]:
    s3 = boto3.client("s3", region_name=REGION)
    page = s3.list_objects_v2(Bucket=config.bucket(BUCKET_SUFFIX), Prefix=f"spill/{job_id}/")
    return sorted(o["Key"] for o in page.get("Contents", ()))


def test_large_and_binary_outputs_spill_and_are_collected_whole(
        spilling, cloudkon, write_workload, tmp_path):
    config, worker = spilling
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(BLOB_BYTES))
    workload = write_workload(_workload(blob))
    out = tmp_path / "out.jsonl"
    proc = cloudkon("submit", "--prefix", config.prefix, "--bucket-suffix", BUCKET_SUFFIX,
                    "--direct", "--wait", "-o", out, "--timeout", 120, workload, timeout=300)
    assert proc.returncode == 0, proc.stderr + worker.log
    assert "Traceback" not in proc.stderr
    job_id = proc.stdout.splitlines()[0]
    records = read_results(out)
    assert sorted(records) == list(range(1, TASKS + 1))
    assert all(r["status"] == SUCCEEDED for r in records.values())
    assert base64.b64decode(records[BIG]["stdout_base64"]) == \
        blob.read_bytes()[-MAX_TAIL_BYTES:]
    assert len(base64.b64decode(records[BIG + 1]["stdout_base64"])) == MAX_TAIL_BYTES
    assert all(len(records[n]["stdout"]) == 64_000 and "stdout_base64" not in records[n]
               for n in range(BIG + 2, BIG + 2 + MEDIUM))
    assert records[ESCAPED]["stdout"] == "\x01" * 60_000  # spilled, and read back whole
    assert messages_left(boto3.client("sqs", region_name=REGION), config.dead_letter_queue) == 0
    assert "spilled results" in worker.log and "cut" not in worker.log
    # The message's object was removed by collect; the lease item's stays for read-backs.
    keys = _spilled_keys(config, job_id)
    assert len(keys) >= 1 and all("/stored-" in k for k in keys), keys

    # A second collector reads the results back from the lease item, through its pointer.
    deployment = Deployment(dataclasses.replace(config, bucket_suffix=BUCKET_SUFFIX))
    again = Collector(job_id, deployment.output_queue, deployment.manifests, deployment.leases,
                      quiet_seconds=0, codec=deployment.codec).run(timeout=5)
    assert again.complete and again.recovered == TASKS


def test_a_spilled_object_that_is_gone_is_reported_by_collect_in_one_line(
        spilling, cloudkon, write_workload, tmp_path, wait_until):
    config, _ = spilling
    proc = cloudkon("submit", "--prefix", config.prefix, "--bucket-suffix", BUCKET_SUFFIX,
                    "--direct", write_workload(_workload()))
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.splitlines()[0]
    sqs = boto3.client("sqs", region_name=REGION)
    wait_until(lambda: any("/results-" in k for k in _spilled_keys(config, job_id)),
               timeout=60, what="the spilled results sent")
    s3 = boto3.client("s3", region_name=REGION)
    for key in _spilled_keys(config, job_id):
        s3.delete_object(Bucket=config.bucket(BUCKET_SUFFIX), Key=key)

    collected = cloudkon("collect", "--prefix", config.prefix, "--bucket-suffix",
                         BUCKET_SUFFIX, job_id, "-o", tmp_path / "out.jsonl", "--timeout", 3)
    assert collected.returncode == 1, collected.stderr
    assert "Traceback" not in collected.stderr
    gone = [line for line in collected.stderr.splitlines() if "cannot be read" in line]
    assert len(gone) == 1 and f"spill/{job_id}/results-" in gone[0] and "are gone" in gone[0], \
        collected.stderr
    # The spilled result's: its message is dropped, and the lease's copy is gone too.
    assert f"1 of {RAMP + MEDIUM + 1 + TRAIL} tasks have no result" in collected.stderr
    assert messages_left(sqs, config.output_queue) == 0  # dropped, not cycling


def test_setup_gives_the_bucket_a_rule_that_expires_spilled_results_and_keeps_others(
        aws_config, cloudkon):
    from cloudkon.backends.resources import SPILL_RULE_ID
    from cloudkon.limits import SPILL_RETENTION_DAYS

    s3 = boto3.client("s3", region_name=REGION)
    bucket = aws_config.bucket(BUCKET_SUFFIX)
    s3.create_bucket(Bucket=bucket)  # made before, with a rule of the user's own
    own = {"ID": "mine", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
           "Expiration": {"Days": 3}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                          LifecycleConfiguration={"Rules": [own]})
    args = ("setup", "--prefix", aws_config.prefix, "--bucket-suffix", BUCKET_SUFFIX)
    first = cloudkon(*args)
    assert first.returncode == 0, first.stderr
    assert any(bucket in line and "updated" in line for line in first.stdout.splitlines())
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["mine"]["Filter"] == {"Prefix": "logs/"}
    assert rules[SPILL_RULE_ID]["Filter"] == {"Prefix": "spill/"}
    assert rules[SPILL_RULE_ID]["Expiration"] == {"Days": SPILL_RETENTION_DAYS}
    again = cloudkon(*args)
    assert any(bucket in line and "exists" in line for line in again.stdout.splitlines())
