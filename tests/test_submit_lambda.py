"""The S3-triggered Lambda (app.py), driven by chalice.test.Client against the moto server,
and its deployment package, built by `chalice package` without AWS credentials: the splitter's
modules and nothing else of the product, enough to run with only boto3 beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote_plus

import boto3
import pytest
from chalice.test import Client
from submit_helpers import REGION, ROOT, chalice_project, deliver_upload, load_app, make_bucket

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


def test_an_event_delivered_twice_splits_the_upload_once(provisioned, tmp_path):
    bucket = make_bucket(provisioned)
    key = "workloads/job-twice-1/w.txt"
    body = "".join("sleep 0\n" if n % 9 else f"echo {n}\n" for n in range(1000))
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=body.encode())
    deliver_upload(chalice_project(tmp_path, provisioned), bucket, key, times=2)

    bundles = [(b.seq, tuple(b.tasks)) for b, _ in _bundles(provisioned)]
    assert len(bundles) == len(set(bundles))  # the second delivery is the same job: no split
    assert [seq for seq, _ in sorted(bundles)] == list(range(len(bundles)))
    manifest = _manifest(provisioned, "job-twice-1")
    assert manifest.bundles == len(bundles)
    assert manifest.digest == hashlib.sha256(body.encode()).hexdigest() and manifest.etag


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


# What the splitter and the provisioner import (app.py -> submitter.s3_lambda,
# fleet.provisioner -> ...), linked one by one in vendor/: the only files of the product in
# the Lambda's zip.
SPLITTER_MODULES = {
    "cloudkon/__init__.py", "cloudkon/aws.py", "cloudkon/codec.py", "cloudkon/config.py",
    "cloudkon/errors.py", "cloudkon/limits.py", "cloudkon/model.py", "cloudkon/signing.py",
    "cloudkon/spill.py", "cloudkon/taskenv.py", "cloudkon/workload.py",
    "cloudkon/backends/__init__.py", "cloudkon/backends/dynamodb.py",
    "cloudkon/backends/s3spill.py", "cloudkon/backends/sqs.py",
    "submitter/__init__.py", "submitter/deployment.py", "submitter/manifest.py",
    "submitter/s3_lambda.py", "submitter/split.py", "submitter/submit.py",
    "fleet/__init__.py", "fleet/capacity.py", "fleet/provisioner.py",
}
# Top-level entries of the zip: the app, Chalice's runtime part, the product's three packages
# and requirements.txt's tenacity.
ZIP_TOP_LEVEL = {"app.py", "chalice", "cloudkon", "fleet", "submitter", "tenacity"}
# boto3 and its own dependencies: what the Lambda's Python runtime provides.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3",
                    "six.py")
STAGE_BUCKET = "cloudkon-workloads-x"


class LambdaPackage(NamedTuple):
    terraform: dict
    names: list[str]  # the files in deployment.zip
    unzipped: Path
    runtime: Path  # links to RUNTIME_PACKAGES


@pytest.fixture(scope="module")
def lambda_package(tmp_path_factory) -> LambdaPackage:
    """`chalice package --pkg-format terraform` of a copy of the project, run once for the
    module, without AWS credentials; its zip unpacked."""
    tmp_path = tmp_path_factory.mktemp("package")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy(ROOT / name, project / name)
    for package in ("cloudkon", "submitter", "fleet"):
        (project / package).symlink_to(ROOT / package)
    # The repository's own relative links, which reach the packages linked above.
    shutil.copytree(ROOT / "vendor", project / "vendor", symlinks=True)
    (project / ".chalice").mkdir()
    shutil.copy(ROOT / ".chalice" / "policy-dev.json", project / ".chalice")
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"]["CLOUDKON_BUCKET"] = STAGE_BUCKET
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION=REGION, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    chalice = Path(sys.executable).parent / "chalice"
    proc = subprocess.run([str(chalice), "package", "--pkg-format", "terraform", "out"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(project / "out" / "deployment.zip") as z:
        names = z.namelist()
        z.extractall(unzipped)
    site = Path(boto3.__file__).resolve().parent.parent
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    return LambdaPackage(json.loads((project / "out" / "chalice.tf.json").read_text()),
                         names, unzipped, runtime)


def _run_in_lambda_runtime(package: LambdaPackage, code: str,
                           env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``code`` as the Lambda runtime would: in the unzipped folder, with no
    site-packages (-S -I): the zip's contents, boto3 and the standard library alone on
    sys.path."""
    prelude = ("import sys\n"
               "assert not any('site-packages' in p for p in sys.path), sys.path\n"
               f"sys.path[:0] = [{str(package.unzipped)!r}, {str(package.runtime)!r}]\n")
    return subprocess.run([sys.executable, "-S", "-I", "-c", prelude + code],
                          cwd=package.unzipped, env=env, capture_output=True, text=True,
                          timeout=60)


def test_chalice_package_schedules_the_provisioner_every_minute(lambda_package):
    resource = lambda_package.terraform["resource"]
    function = resource["aws_lambda_function"]["provision_workers"]
    assert function["handler"] == "app.provision_workers"
    [rule] = resource["aws_cloudwatch_event_rule"].values()
    assert rule["schedule_expression"] == "rate(1 minute)"


def test_chalice_package_subscribes_the_handler_to_the_stage_bucket(lambda_package):
    function = lambda_package.terraform["resource"]["aws_lambda_function"]["split_workload"]
    assert function["handler"] == "app.split_workload"
    assert function["environment"]["variables"]["CLOUDKON_BUCKET"] == STAGE_BUCKET
    notify = lambda_package.terraform["resource"]["aws_s3_bucket_notification"]
    assert [n["lambda_function"][0]["filter_prefix"] for n in notify.values()] == ["workloads/"]


def test_the_lambda_zip_holds_the_splitter_and_nothing_else_of_the_product(lambda_package):
    names = lambda_package.names
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == ZIP_TOP_LEVEL
    assert {n for n in names if n.startswith(("cloudkon/", "submitter/", "fleet/"))} \
        == SPLITTER_MODULES
    for unwanted in ("cloudkon/cli.py", "cloudkon/report.py", "cloudkon/bench/", "worker/",
                     "local/", "fleet/resources.py", "fleet/status.py", "numpy", "click",
                     "tqdm"):
        assert not [n for n in names if n.startswith(unwanted)], unwanted


def test_the_lambda_zip_imports_the_handler_with_only_boto3_beside_it(lambda_package):
    code = ("import json, os\n"
            "from app import app, split_workload\n"
            "root = sys.path[0] + os.sep\n"
            "files = [getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]\n"
            "print(json.dumps({'handlers': sorted(app.handler_map),\n"
            "                  'loaded': sorted(f[len(root):] for f in files"
            " if f.startswith(root))}))\n")
    # The stage's variables, as the Lambda gets them; nothing else.
    env = {"CLOUDKON_BUCKET": STAGE_BUCKET, "CLOUDKON_PREFIX": "cloudkon",
           "AWS_DEFAULT_REGION": REGION}
    proc = _run_in_lambda_runtime(lambda_package, code, env)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["handlers"] == ["provision_workers", "split_workload"]
    # Every module of the product in the zip is one that importing the handlers loads.
    assert {f for f in found["loaded"] if f.startswith(("cloudkon/", "submitter/", "fleet/"))} \
        == SPLITTER_MODULES


def test_the_lambda_zip_splits_an_upload_with_only_boto3_beside_it(lambda_package, provisioned):
    bucket = make_bucket(provisioned)
    key = "workloads/job-zip-1/w.txt"
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key,
                                                      Body=b"sleep 0\necho hi\n")
    event = Client(load_app()).events.generate_s3_event(bucket=bucket, key=quote_plus(key))
    code = ("import json\n"
            "from app import split_workload\n"
            f"split_workload(json.loads({json.dumps(event)!r}), None)\n")
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}  # the moto server
    env.update(CLOUDKON_BUCKET=bucket, CLOUDKON_PREFIX=provisioned.prefix)
    proc = _run_in_lambda_runtime(lambda_package, code, env)
    assert proc.returncode == 0, proc.stderr

    manifest = _manifest(provisioned, "job-zip-1")
    assert manifest.status == SUBMITTED and manifest.tasks == 2
    assert sorted(t for b, _ in _bundles(provisioned) for t in b.tasks) == [
        (1, "sleep 0"), (2, "echo hi")]
