"""`cloudkon setup`, `cloudkon teardown`, and what a user sees when AWS is not ready,
run as a user runs them (subprocesses) against the moto server."""

from __future__ import annotations

import json
import os

import pytest

from cloudkon.config import AwsConfig

ACCOUNT = "123456789012"  # moto's


def resources(config: AwsConfig) -> list[str]:
    return [config.input_queue, config.dead_letter_queue, config.output_queue,
            config.lease_table, config.bucket(ACCOUNT)]


def states(stdout: str, prefix: str) -> dict[str, str]:
    """Resource name -> what the command did to it, from its printed table."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        name = next(p for p in parts if p.startswith(prefix))
        found[name] = parts[parts.index(name) + 1]
    return found


def test_setup_twice_is_harmless_and_teardown_removes_everything(aws_config, cloudkon, sqs,
                                                                   dynamodb):
    import boto3

    prefix = ["--prefix", aws_config.prefix]
    first = cloudkon("setup", *prefix)
    assert first.returncode == 0, first.stderr
    assert states(first.stdout, aws_config.prefix) == \
        dict.fromkeys(resources(aws_config), "created")

    url = sqs.get_queue_url(QueueName=aws_config.input_queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["MaximumMessageSize"] == "1048576"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(
        aws_config.dead_letter_queue)
    table = dynamodb.describe_table(TableName=aws_config.lease_table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = dynamodb.describe_time_to_live(TableName=aws_config.lease_table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"

    sqs.send_message(QueueUrl=url, MessageBody="kept across setups")
    again = cloudkon("setup", *prefix)
    assert again.returncode == 0, again.stderr
    assert states(again.stdout, aws_config.prefix) == dict.fromkeys(resources(aws_config), "exists")
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"] == \
           "kept across setups"

    s3 = boto3.client("s3")
    s3.put_object(Bucket=aws_config.bucket(ACCOUNT), Key="workloads/w.txt", Body=b"sleep 0\n")
    gone = cloudkon("teardown", *prefix)
    assert gone.returncode == 0, gone.stderr
    assert states(gone.stdout, aws_config.prefix) == dict.fromkeys(resources(aws_config), "deleted")
    queues = sqs.list_queues(QueueNamePrefix=aws_config.prefix).get("QueueUrls", [])
    assert queues == []
    assert aws_config.lease_table not in dynamodb.list_tables()["TableNames"]
    assert aws_config.bucket(ACCOUNT) not in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    twice = cloudkon("teardown", *prefix)
    assert twice.returncode == 0, twice.stderr
    assert states(twice.stdout, aws_config.prefix) == dict.fromkeys(resources(aws_config), "absent")


def test_worker_with_no_create_and_nothing_set_up_says_to_run_setup(aws_config, cloudkon):
    proc = cloudkon("worker", "--prefix", aws_config.prefix, "--no-create", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "does not exist" in proc.stderr and "cloudkon setup" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_credentials_are_one_clear_line(moto_server, cloudkon, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=moto_server, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    proc = cloudkon("setup", "--prefix", "nocreds", env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "cloudkon: error: no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and"
        " AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them")


@pytest.mark.parametrize("args, message", [
    (["setup", "--prefix", "Has_Capitals"], "--prefix 'Has_Capitals'"),
    (["teardown"], "Missing option '--prefix'"),
    (["worker", "--threads", "0"], "--threads"),
])
def test_usage_errors_are_one_line_and_exit_2(cloudkon, args, message):
    proc = cloudkon(*args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def _region_env(tmp_path, moto_server, **region: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", **region)
    return env


def test_the_region_is_read_from_aws_region_or_aws_default_region(aws_config, cloudkon,
                                                                  tmp_path, moto_server):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        proc = cloudkon("setup", "--prefix", aws_config.prefix, timeout=60,
                        env=_region_env(tmp_path, moto_server, **{name: "us-east-1"}))
        assert proc.returncode == 0, (name, proc.stderr)


def test_no_region_names_every_place_a_region_is_read_from(aws_config, cloudkon, tmp_path,
                                                           moto_server):
    proc = cloudkon("setup", "--prefix", aws_config.prefix, timeout=60,
                    env=_region_env(tmp_path, moto_server))
    assert (proc.returncode, proc.stderr) == (2, (
        "cloudkon: error: no AWS region: pass --region, or set AWS_REGION or AWS_DEFAULT_REGION,"
        " or a region in the AWS profile\n"))


def test_the_lambda_reads_aws_region_as_the_cli_does(monkeypatch):
    from cloudkon import aws

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert aws.sqs_client(AwsConfig(prefix="p")).meta.region_name == "eu-west-1"
    assert aws.sqs_client(AwsConfig(prefix="p", region="us-east-2")).meta.region_name \
        == "us-east-2"
