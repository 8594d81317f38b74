"""deploy/: the systemd unit, the EC2 user data and the IAM policies agree with the worker."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cloudkon.limits import DEFAULT_DRAIN_SECONDS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SPOT_NOTICE_SECONDS = 120  # EC2 announces a spot interruption two minutes ahead


def unit_settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


@pytest.mark.parametrize("marker, name", [
    ("UNIT", "cloudkon-worker.service"),
    ("SPOT_UNIT", "cloudkon-spot-watch.service"),
    ("SPOT_SCRIPT", "cloudkon-spot-watch"),
    ("CW_AGENT", "cloudwatch-agent.json"),
])
def test_user_data_installs_the_deploy_files_unchanged(marker, name):
    user_data = (DEPLOY / "user-data.sh").read_text()
    embedded = re.search(rf"<<'{marker}'\n(.*?)^{marker}$", user_data, re.S | re.M)
    assert embedded is not None, f"user-data.sh does not install {name}"
    assert embedded.group(1) == (DEPLOY / name).read_text()


def test_scripts_parse():
    for script, shell in (("user-data.sh", "bash"), ("cloudkon-spot-watch", "sh")):
        proc = subprocess.run([shell, "-n", str(DEPLOY / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_unit_stops_after_the_drain_and_within_the_spot_notice():
    unit = unit_settings((DEPLOY / "cloudkon-worker.service").read_text())
    drain = float(re.search(r"--drain-seconds (\S+)", unit["ExecStart"]).group(1))
    assert drain == DEFAULT_DRAIN_SECONDS
    assert drain + 5 <= int(unit["TimeoutStopSec"]) <= SPOT_NOTICE_SECONDS
    assert unit["KillMode"] == "mixed"  # SIGTERM to the daemon, not to the running tasks
    assert unit["Restart"] == "on-failure" and unit["RestartPreventExitStatus"] == "2"
    assert unit["User"] == "cloudkon"
    assert "--no-create" in unit["ExecStart"]
    assert "--emf-metrics" in unit["ExecStart"]


def test_the_termination_hook_outlasts_the_units_stop():
    from cloudkon.limits import DRAIN_HOOK_SECONDS

    unit = unit_settings((DEPLOY / "cloudkon-worker.service").read_text())
    assert DRAIN_HOOK_SECONDS >= int(unit["TimeoutStopSec"]) + 30  # the watcher polls every 5 s


def test_the_cloudwatch_agent_ships_the_log_the_unit_writes():
    unit = unit_settings((DEPLOY / "cloudkon-worker.service").read_text())
    agent = json.loads((DEPLOY / "cloudwatch-agent.json").read_text())
    [collected] = agent["logs"]["logs_collected"]["files"]["collect_list"]
    assert unit["StandardError"] == unit["StandardOutput"] == f"append:{collected['file_path']}"
    assert collected["log_group_name"] == "/cloudkon/PREFIX/workers"
    logs_policy = (DEPLOY / "iam" / "worker-logs-policy.json").read_text()
    assert "log-group:/cloudkon/PREFIX/workers" in logs_policy


def test_the_watcher_stops_the_worker_when_auto_scaling_terminates_the_instance():
    script = (DEPLOY / "cloudkon-spot-watch").read_text()
    assert "meta-data/autoscaling/target-lifecycle-state" in script
    assert '"$state" = Terminated' in script


def test_worker_policy_allows_exactly_the_calls_of_a_worker_on_its_own_resources():
    policy = json.loads((DEPLOY / "iam" / "worker-policy.json").read_text())
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            if statement["Action"] == "sts:GetCallerIdentity":  # the bucket's name; no ARN
                assert resource == "*"
                continue
            # Objects only in the bucket's folder of spilled results.
            assert "PREFIX-" in resource and "*" not in resource.removesuffix("/spill/*")
        actions.update([statement["Action"]] if isinstance(statement["Action"], str)
                       else statement["Action"])
    # The calls of `cloudkon worker --no-create` (the *Batch calls need the same actions).
    assert actions == {
        "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage", "sqs:SendMessage",
        "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:UpdateItem",
        "dynamodb:PutItem", "dynamodb:DeleteItem", "s3:PutObject", "s3:GetObject",
        "sts:GetCallerIdentity",
        "ssm:GetParameter",  # --signing-key ssm:/PREFIX-signing-key
    }
    [key] = [s for s in policy["Statement"] if "ssm:GetParameter" in s["Action"]]
    assert key["Resource"] == "arn:aws:ssm:REGION:ACCOUNT:parameter/PREFIX-signing-key"
    [spill] = [s for s in policy["Statement"] if "s3:PutObject" in s["Action"]]
    assert set(spill["Action"]) == {"s3:PutObject", "s3:GetObject"}
    assert spill["Resource"] == "arn:aws:s3:::PREFIX-workloads-ACCOUNT/spill/*"
    # Whole items are put and deleted only under the worker's own registry keys.
    [registry] = [s for s in policy["Statement"] if "dynamodb:DeleteItem" in s["Action"]]
    assert set(registry["Action"]) == {"dynamodb:PutItem", "dynamodb:DeleteItem"}
    assert registry["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == \
        ["_worker#*"]


def test_fleet_policy_scopes_writes_to_the_prefixs_own_resources():
    policy = json.loads((DEPLOY / "iam" / "fleet-policy.json").read_text())
    for statement in policy["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) \
            else statement["Action"]
        writes = [a for a in actions if not a.split(":")[1].startswith(("Describe", "Get",
                                                                        "List"))]
        resources = statement["Resource"]
        if not writes or writes == ["sts:GetCallerIdentity"]:
            continue
        if resources == "*":  # EC2 cannot scope these to names: held to the region instead
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == "REGION"
            continue
        for resource in [resources] if isinstance(resources, str) else resources:
            assert "PREFIX" in resource or "AWSServiceRoleForAutoScaling" in resource, resource
