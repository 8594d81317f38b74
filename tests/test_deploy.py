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


def test_worker_policy_allows_exactly_the_calls_of_a_worker_on_its_own_resources():
    policy = json.loads((DEPLOY / "iam" / "worker-policy.json").read_text())
    actions = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            assert "PREFIX-" in resource and "*" not in resource
        actions.update(statement["Action"])
    # The calls of `cloudkon worker --no-create` (the *Batch calls need the same actions).
    assert actions == {
        "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage", "sqs:SendMessage",
        "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:UpdateItem",
    }
