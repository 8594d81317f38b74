"""Least privilege, checked: every AWS call each role makes in an end-to-end run is allowed
by that role's policy, and every action a policy grants is called (or listed below with the
reason it is granted but not exercised here).

The run goes through a moto server of its own behind tests/aws_recorder.py, which logs
each request with the access key that signed it. Each role gets fake credentials of its
own (moto accepts any): `cloudkon setup` and `teardown` sign with ``setup-...``, the
worker subprocess with ``worker-...``, the Lambda's handler (in this process, driven by
chalice.test.Client) with ``lambda-...``, every client command with ``client-...``. The
test's own calls (a poison message, the signing key's SSM parameter) sign with
``admin-...`` and are not checked. The deployment signs its bundles (--signing-key
ssm:/cloudkon-signing-key for the worker and the clients, the Lambda's stage variable), so
every role's read of the key is checked too. moto does not enforce IAM:
tests/iam_policy.py is what decides, for the subset of IAM the policies use (its
docstring says what it does not model).

To grant a role a new call: add the statement to its policy file (deploy/iam/ or
.chalice/), and make the call happen in the flow below, or, if this flow cannot make it
(a fleet-only call, one that needs a large output), add the (role, Sid, action) to
NOT_EXERCISED with the reason. Nothing else changes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_fixtures import aws_server
from iam_policy import Policy, Request, covers, request_of
from submit_helpers import load_app

from cloudkon.limits import DEFAULT_TASKS_PER_BUNDLE, TAIL_HELD_BUNDLES

ROOT = Path(__file__).resolve().parent.parent
IAM = ROOT / "deploy" / "iam"
ACCOUNT = "123456789012"  # moto's account for any access key
REGION = "us-east-1"
# The deployment's own names: .chalice/policy-dev.json names the default prefix's resources.
PREFIX = "cloudkon"
BUCKET = f"{PREFIX}-workloads-{ACCOUNT}"
# The deployment signs its bundles, with the key in the SSM parameter the policies name.
SIGNING_KEY = f"ssm:/{PREFIX}-signing-key"
WORKER_ARGS = ("--no-create", "--threads", 2, "--visibility-timeout", 4, "--wait-seconds", 1,
               "--task-timeout", 30, "--drain-seconds", 1, "--tail-bytes", 65536,
               "--signing-key", SIGNING_KEY)


@dataclass(frozen=True)
class Role:
    key: str  # the access key id the role's processes sign with in this test
    policies: tuple[Path, ...]


ROLES = {
    "setup": Role("setup-ops", (IAM / "setup-policy.json",)),
    # The instance role holds three documents; the daemon uses the first only.
    "worker": Role("worker-i0123", (IAM / "worker-policy.json",
                                    IAM / "worker-install-policy.json",
                                    IAM / "worker-logs-policy.json")),
    "lambda": Role("lambda-split", (ROOT / ".chalice" / "policy-dev.json",)),
    "client": Role("client-alice", (IAM / "client-policy.json",)),
}
ADMIN_KEY = "admin-test"

# Granted, but not called in this run: (role, "file#Sid", action) -> why.
NOT_EXERCISED = {
    ("worker", "worker-install-policy.json#DownloadTheCloudKonWheel", "s3:GetObject"):
        "the instance's user data downloads the wheel (deploy/user-data.sh), not the daemon",
    **{("worker", "worker-logs-policy.json#ShipTheWorkerLogWithTheCloudWatchAgent", action):
       "the CloudWatch agent ships the worker's log (deploy/cloudwatch-agent.json)"
       for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams",
                      "logs:PutLogEvents", "logs:PutRetentionPolicy")},
    ("worker", "worker-policy.json#SpillLargeResults", "s3:GetObject"):
        "a worker reads spilled stored results back only when it replays or takes over a"
        " bundle whose results outgrew a lease item (tests/test_spill.py)",
    ("setup", "setup-policy.json#Queues", "sqs:SetQueueAttributes"):
        "`cloudkon setup` run again sets the attributes that changed (tests/test_aws_setup.py)",
    **{("lambda", "policy-dev.json#Logs", action):
       "the Lambda runtime writes the function's log, not the handler"
       for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")},
    ("lambda", "policy-dev.json#ContinueALongSplit", "lambda:InvokeFunction"):
        "a split invokes its own function again only when the Lambda's 15 minutes run out"
        " (tests/test_split_resume.py drives the continuation in-process; moto runs no"
        " Lambda without Docker)",
}


UNUSED_HINT = ("(make the flow of this test call what is granted, or list it in NOT_EXERCISED"
               " with the reason)")


def _env(key: str) -> dict[str, str]:
    return {**os.environ, "AWS_ACCESS_KEY_ID": key}


@pytest.fixture
def recorded(tmp_path):
    """A moto server of this test's own behind the recorder; returns the calls log's path."""
    calls = tmp_path / "calls.jsonl"
    with aws_server(lambda port: [sys.executable, str(ROOT / "tests" / "aws_recorder.py"),
                                  "--port", str(port), "--log", str(calls)],
                    tmp_path / "recorder.log", access_key=ADMIN_KEY):
        yield calls


def _ok(proc: subprocess.CompletedProcess, *codes: int) -> subprocess.CompletedProcess:
    assert proc.returncode in (codes or (0,)), proc.stderr
    return proc


def _run_every_role(tmp_path: Path, cloudkon, write_workload, wait_until, monkeypatch) -> None:
    """The flow whose calls are checked: setup, a worker, an upload split by the Lambda,
    the provisioner's run, --direct, collect, status, retry, cancel, dead letters,
    teardown."""
    import boto3

    def as_client(*args, codes=(0,)):
        env = {**_env(ROLES["client"].key), "CLOUDKON_SIGNING_KEY": SIGNING_KEY}
        return _ok(cloudkon(*args, "--prefix", PREFIX, env=env), *codes)

    _ok(cloudkon("setup", "--prefix", PREFIX, env=_env(ROLES["setup"].key)))
    # As an administrator would (a session of its own: the default one may hold the keys of
    # an earlier test).
    boto3.session.Session().client("ssm", region_name=REGION).put_parameter(
        Name=SIGNING_KEY.removeprefix("ssm:"), Type="SecureString", Value=os.urandom(32).hex())
    _give_the_prefix_a_fleet()
    # An upload, split by the Lambda (its handler in this process, as the lambda role); the
    # provisioner then sees the backlog and scales the group out.
    upload = write_workload("echo up 1\nfalse\necho up 3\n", "upload.txt")
    as_client("submit", "--job-id", "up1", upload)
    assert "nothing uploaded again" in as_client("submit", "--job-id", "up1", upload).stderr
    _run_the_lambda(tmp_path, monkeypatch, "workloads/up1/upload.txt")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloudkon", "worker", "--prefix", PREFIX,
             *map(str, WORKER_ARGS)], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env=_env(ROLES["worker"].key))
    try:
        as_client("collect", "up1", "--timeout", 60, codes=(1,))  # line 2 failed
        as_client("retry", "up1", "--failed")  # reads the object's version, sends attempt 2
        direct = write_workload("echo d 1\necho d 2\n", "direct.txt")
        as_client("submit", "--direct", "--job-id", "d1", "--wait", "--timeout", 60, direct)
        # Outputs too large for a message and a lease item: the worker spills them, collect
        # reads and removes them (the first bundle holds 100 commands, 7 x 64,000
        # characters and one result of 360 KB in JSON among them; the short commands after
        # them make the job's small end, cut in bundles of its own).
        large = write_workload("head -c 48000 /dev/urandom | base64 -w0\n" * 7
                               + "head -c 60000 /dev/zero | tr '\\0' '\\1'\n"
                               + "true\n" * (TAIL_HELD_BUNDLES + 1) * DEFAULT_TASKS_PER_BUNDLE,
                               "large.txt")
        as_client("submit", "--direct", "--job-id", "big1", "--wait", "--timeout", 60, large)
        as_client("status")  # queues, workers, jobs
        slow = write_workload("/bin/sleep 20\n/bin/sleep 20\n", "slow.txt")
        as_client("submit", "--direct", "--job-id", "c1", slow)
        assert "cancelled" in as_client("cancel", "c1").stdout
        # A poison message, dead-lettered by the worker, listed and redriven by the client.
        sqs = boto3.session.Session().client("sqs", region_name=REGION)
        sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=f"{PREFIX}-input")["QueueUrl"],
                         MessageBody="not a bundle")
        wait_until(lambda: "dead-letter" in log.read_text(), what="the poison dead-lettered")
        as_client("dlq", "list")
        as_client("dlq", "redrive", "--all")
        worker.send_signal(signal.SIGTERM)  # it unregisters
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    _ok(cloudkon("teardown", "--prefix", PREFIX, env=_env(ROLES["setup"].key)))


def _give_the_prefix_a_fleet() -> None:
    """As `fleet up` leaves it (made here directly, as the fleet role is not checked): an
    empty Auto Scaling group with the provisioner on; and a bucket that keeps versions."""
    import boto3

    from fleet.capacity import ScalingPolicy, ScalingState
    from fleet.provisioner import SETTINGS_KEY, FleetSettings

    image = boto3.session.Session().client("ec2", region_name=REGION).describe_images(
        Owners=["amazon"])["Images"][0]["ImageId"]
    autoscaling = boto3.session.Session().client("autoscaling", region_name=REGION)
    autoscaling.create_launch_configuration(LaunchConfigurationName=f"{PREFIX}-worker",
                                            ImageId=image, InstanceType="t3.micro")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=f"{PREFIX}-workers", LaunchConfigurationName=f"{PREFIX}-worker",
        MinSize=0, MaxSize=2, DesiredCapacity=0, AvailabilityZones=[f"{REGION}a"])
    settings = FleetSettings(f"{PREFIX}-workers", ScalingPolicy(0, 2), ScalingState())
    boto3.session.Session().client("dynamodb", region_name=REGION).put_item(
        TableName=f"{PREFIX}-leases",
        Item={"pk": {"S": SETTINGS_KEY}, "settings": {"S": settings.to_json()}})
    boto3.session.Session().client("s3", region_name=REGION).put_bucket_versioning(
        Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


def _run_the_lambda(tmp_path: Path, monkeypatch, key: str) -> None:
    from urllib.parse import quote_plus

    from chalice.test import Client

    import submitter.s3_lambda

    project = tmp_path / "chalice"
    (project / ".chalice").mkdir(parents=True)
    stage = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage["stages"]["dev"]["environment_variables"].update(
        CLOUDKON_PREFIX=PREFIX, CLOUDKON_BUCKET=BUCKET, CLOUDKON_SIGNING_KEY=SIGNING_KEY)
    (project / ".chalice" / "config.json").write_text(json.dumps(stage))
    with monkeypatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", ROLES["lambda"].key)
        m.setattr(submitter.s3_lambda, "_deployment", None)  # clients made with this key
        client = Client(load_app(), stage_name="dev", project_dir=str(project))
        event = client.events.generate_s3_event(bucket=BUCKET, key=quote_plus(key))
        client.lambda_.invoke("split_workload", event)
        # The provisioner's run: the backlog is the upload's bundles.
        client.lambda_.invoke("provision_workers", client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))


def check(calls_log: Path, roles: dict[str, Role] = ROLES,
          exempt: dict = NOT_EXERCISED) -> tuple[list[str], list[str], dict]:
    """(denied calls, grants never used, calls by role) of a recorded run. A grant is an
    (action, resource) of an Allow statement: each must allow some call of the run, unless
    ``exempt`` lists the (role, statement, action)."""
    by_role: dict[str, list[Request]] = defaultdict(list)
    keys = {role.key: name for name, role in roles.items()}
    for line in calls_log.read_text().splitlines():
        call = json.loads(line)
        if call["key"] != ADMIN_KEY:
            assert call["key"] in keys, f"a call signed by an unknown key: {call}"
            by_role[keys[call["key"]]].append(request_of(call, ACCOUNT))
    denied, unused = [], []
    for name, role in roles.items():
        policy = Policy.load(list(role.policies), PREFIX=PREFIX, REGION=REGION, ACCOUNT=ACCOUNT)
        used: dict[str, list[Request]] = defaultdict(list)  # statement -> the calls it allows
        for request in by_role[name]:
            allowed, statements = policy.decide(request)
            if not allowed:
                denied.append(f"{name}: {request}")
            for statement in statements:
                used[statement.source].append(request)
        for statement, action, resource in policy.grants():
            called = any(covers(action, resource, r) for r in used[statement.source])
            if called == ((name, statement.source, action) in exempt):
                unused.append(f"{name}: {statement.source} {action} on {resource}: "
                              + ("listed in NOT_EXERCISED but called" if called
                                 else "granted but never called"))
    return sorted(set(denied)), unused, by_role


def test_every_call_of_every_role_is_allowed_and_every_grant_is_used(
        recorded, tmp_path, cloudkon, write_workload, wait_until, monkeypatch):
    _run_every_role(tmp_path, cloudkon, write_workload, wait_until, monkeypatch)
    denied, unused, by_role = check(recorded)
    assert all(by_role[name] for name in ROLES), {n: len(c) for n, c in by_role.items()}
    assert not denied, "\n".join(["calls the policies do not allow:", *denied])
    assert not unused, "\n".join([*unused, UNUSED_HINT])


def test_the_check_reports_denied_calls_unused_grants_and_stale_exemptions(tmp_path):
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"Statement": [
        {"Sid": "Records", "Effect": "Allow", "Action": "dynamodb:PutItem",
         "Resource": "arn:aws:dynamodb:REGION:ACCOUNT:table/PREFIX-leases",
         "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*#manifest"]}}},
        {"Sid": "Upload", "Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"],
         "Resource": "arn:aws:s3:::PREFIX-workloads-ACCOUNT/workloads/*"}]}))
    put = {"key": "client-x", "region": REGION, "service": "dynamodb", "operation": "PutItem",
           "tables": [f"{PREFIX}-leases"]}
    upload = {"key": "client-x", "region": REGION, "service": "s3", "operation": "PutObject",
              "bucket": BUCKET, "object": "workloads/j/w.txt", "version": False}
    calls = tmp_path / "calls.jsonl"
    calls.write_text("\n".join(json.dumps(c) for c in (
        {**put, "leading_keys": ["j#manifest"]}, {**put, "leading_keys": ["j#0"]}, upload,
        {"key": ADMIN_KEY, "region": REGION, "service": "sqs", "operation": "DeleteQueue",
         "queue": "q"})) + "\n")
    roles = {"client": Role("client-x", (policy,))}
    denied, unused, by_role = check(calls, roles, exempt={
        ("client", "p.json#Upload", "s3:PutObject"): "a stale reason"})
    assert len(by_role["client"]) == 3  # the admin's call is not checked
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{PREFIX}-leases"
    assert denied == [f"client: dynamodb:PutItem on {table} keys ['j#0']"]
    assert [u.split(" on ")[0] for u in unused] == [
        "client: p.json#Upload s3:PutObject", "client: p.json#Upload s3:GetObject"]
    assert "listed in NOT_EXERCISED but called" in unused[0]
    assert "granted but never called" in unused[1]
    calls.write_text(json.dumps({**upload, "key": "stranger"}) + "\n")
    with pytest.raises(AssertionError, match="unknown key"):
        check(calls, roles)
