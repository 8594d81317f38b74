"""The S3-triggered Lambda (app.py), driven by chalice.test.Client against the moto server,
and its deployment package, built by `chalice package` without AWS credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
from submit_helpers import REGION, ROOT, chalice_project, deliver_upload, make_bucket

from cloudkon.codec import decode_bundle
from submitter.manifest import REJECTED, SUBMITTED, DynamoManifests


def _bundles(config) -> list:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName=config.input_queue)["QueueUrl"]
    found = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       VisibilityTimeout=300, WaitTimeSeconds=0).get("Messages"):
        found += [decode_bundle(m["Body"]) for m in batch]
    return found


def _manifest(config, job_id):
    return DynamoManifests(boto3.client("dynamodb", region_name=REGION),
                           config.lease_table).load(job_id)


def test_the_lambda_splits_an_upload_whose_key_has_spaces_plus_and_unicode(provisioned, tmp_path):
    bucket = make_bucket(provisioned)
    key = "workloads/job-keys-1/my work+load ünïcode €.txt"
    body = "# tasks\nsleep 0\necho 'a b'\n\nsleep x\nsleep 10\n"
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=body.encode())
    deliver_upload(chalice_project(tmp_path, provisioned), bucket, key)

    manifest = _manifest(provisioned, "job-keys-1")
    assert manifest.status == SUBMITTED and manifest.tasks == 3
    assert manifest.source == f"s3://{bucket}/{key}"
    assert manifest.bad_line_count == 1 and manifest.bad_lines[0][0] == 5
    bundles = _bundles(provisioned)
    assert sorted(t for b, _ in bundles for t in b.tasks) == [
        (2, "sleep 0"), (3, "echo 'a b'"), (6, "sleep 10")]
    assert {reply_to.rsplit("/", 1)[-1] for _, reply_to in bundles} == {provisioned.output_queue}


def test_an_event_delivered_twice_sends_the_same_bundles(provisioned, tmp_path):
    bucket = make_bucket(provisioned)
    key = "workloads/job-twice-1/w.txt"
    body = "".join("sleep 0\n" if n % 9 else f"echo {n}\n" for n in range(1000))
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=body.encode())
    deliver_upload(chalice_project(tmp_path, provisioned), bucket, key, times=2)

    bundles = [(b.seq, tuple(b.tasks)) for b, _ in _bundles(provisioned)]
    once = sorted(set(bundles))
    assert sorted(bundles) == sorted(once * 2)  # every bundle twice, under the same number
    assert [seq for seq, _ in once] == list(range(len(once)))
    assert _manifest(provisioned, "job-twice-1").bundles == len(once)


def test_an_empty_upload_is_rejected_and_collect_names_it(provisioned, tmp_path, cloudkon):
    bucket = make_bucket(provisioned)
    key = "workloads/job-empty-1/empty.txt"
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=b"")
    deliver_upload(chalice_project(tmp_path, provisioned), bucket, key)

    assert _manifest(provisioned, "job-empty-1").status == REJECTED
    assert _bundles(provisioned) == []
    proc = cloudkon("collect", "--prefix", provisioned.prefix, "--bucket-suffix", "moto",
                    "job-empty-1", "--timeout", "30")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"cloudkon: error: s3://{bucket}/{key}: is empty: no tasks to run"


def test_an_upload_outside_a_job_folder_is_ignored(provisioned, tmp_path):
    bucket = make_bucket(provisioned)
    key = "workloads/loose.txt"
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=b"sleep 0\n")
    deliver_upload(chalice_project(tmp_path, provisioned), bucket, key)
    assert _bundles(provisioned) == []


def _runtime_path(folder: Path) -> Path:
    """A folder holding boto3 and its dependencies only: what the Lambda runtime adds."""
    import boto3 as b

    site = Path(b.__file__).resolve().parent.parent
    folder.mkdir()
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"):
        (folder / name).symlink_to(site / name)
    return folder


def test_chalice_package_builds_a_self_contained_zip_without_credentials(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy(ROOT / name, project / name)
    for package in ("cloudkon", "submitter"):
        (project / package).symlink_to(ROOT / package)
    # The repository's own relative links, which reach the packages linked above.
    shutil.copytree(ROOT / "vendor", project / "vendor", symlinks=True)
    (project / ".chalice").mkdir()
    shutil.copy(ROOT / ".chalice" / "policy-dev.json", project / ".chalice")
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"]["CLOUDKON_BUCKET"] = "cloudkon-workloads-x"
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION=REGION, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    chalice = Path(sys.executable).parent / "chalice"
    proc = subprocess.run([str(chalice), "package", "--pkg-format", "terraform", "out"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    terraform = json.loads((project / "out" / "chalice.tf.json").read_text())
    function = terraform["resource"]["aws_lambda_function"]["split_workload"]
    assert function["handler"] == "app.split_workload"
    assert function["environment"]["variables"]["CLOUDKON_BUCKET"] == "cloudkon-workloads-x"
    notify = terraform["resource"]["aws_s3_bucket_notification"]
    assert [n["lambda_function"][0]["filter_prefix"] for n in notify.values()] == ["workloads/"]

    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(project / "out" / "deployment.zip") as z:
        z.extractall(unzipped)
    runtime = _runtime_path(tmp_path / "runtime")
    check = ("import sys\n"
             f"sys.path[:] = [{str(unzipped)!r}, {str(runtime)!r}]"
             " + [p for p in sys.path if p and 'site-packages' not in p]\n"
             "import app\n"
             "import cloudkon, submitter, tenacity\n"
             "assert all(m.__file__.startswith(sys.path[0]) for m in (app, cloudkon, submitter,"
             " tenacity))\n"
             "print(sorted(app.app.handler_map))\n")
    proc = subprocess.run([sys.executable, "-S", "-E", "-c", check], cwd=tmp_path,
                          env={**env, "CLOUDKON_BUCKET": "cloudkon-workloads-x",
                               "CLOUDKON_PREFIX": "cloudkon"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['split_workload']"

