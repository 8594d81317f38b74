"""`cloudkon fleet up|down|status|scale` and the teardown warning, run as a user runs them
(subprocesses) against the moto server. Moto launches the group's instances at once (they
run nothing); the workers whose records `fleet status` reads are real `cloudkon worker`
processes told an instance id."""

from __future__ import annotations

import base64
import json
import signal
import time

import boto3
import pytest
from aws_fixtures import REGION, queue_url
from conftest import wait_until

from cloudkon.limits import DRAIN_HOOK_SECONDS

ACCOUNT = "123456789012"  # moto's


def printed(stdout: str) -> dict[str, tuple[str, str]]:
    """Kind -> (name, state) of each resource line of setup, fleet up or fleet down."""
    found = {}
    for line in stdout.splitlines():
        name, state = line[19:].split()[:2]
        found[line[:18].strip()] = (name, state)
    return found


FLEET_KINDS = ["worker role", "instance profile", "worker wheel", "launch template",
               "auto scaling group", "lifecycle hook", "provisioner"]


@pytest.fixture
def deployment(aws_config, cloudkon):
    """A prefix set up with `cloudkon setup` (queues, table, bucket)."""
    proc = cloudkon("setup", "--prefix", aws_config.prefix)
    assert proc.returncode == 0, proc.stderr
    return aws_config


def fleet_up(cloudkon, config, *args):
    proc = cloudkon("fleet", "up", "--prefix", config.prefix, *args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def small_fleet(deployment):
    """A fleet made directly (no wheel build): a launch template, a group of one instance
    with at most 4, and the provisioner's settings as `fleet up --tasks-per-worker 500
    --max 4` records them. `fleet up` itself is tested above."""
    from fleet.capacity import ScalingPolicy, ScalingState
    from fleet.provisioner import Fleet, FleetSettings

    config = deployment
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_launch_template(LaunchTemplateName=config.launch_template,
                               LaunchTemplateData={"ImageId": "ami-12c6146b",
                                                   "InstanceType": "c7i.large"})
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    boto3.client("autoscaling", region_name=REGION).create_auto_scaling_group(
        AutoScalingGroupName=config.fleet_group, MinSize=0, MaxSize=4, DesiredCapacity=1,
        VPCZoneIdentifier=subnet,
        LaunchTemplate={"LaunchTemplateName": config.launch_template, "Version": "$Latest"})
    now = time.time()
    Fleet(config).save(FleetSettings(config.fleet_group, ScalingPolicy(0, 4, tasks_per_worker=500),
                                     ScalingState(last_change=now, last_busy=now)))
    return config


def group(config) -> dict:
    asg = boto3.client("autoscaling", region_name=REGION)
    [found] = asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=[config.fleet_group])["AutoScalingGroups"]
    return found


def test_fleet_up_twice_makes_everything_once_and_down_removes_only_that(deployment, cloudkon):
    config = deployment
    iam = boto3.client("iam", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    bucket = config.bucket(ACCOUNT)

    first = fleet_up(cloudkon, config, "--instances", "2", "--max", "4", "--spot",
                     "--threads", "6")
    states = printed(first.stdout)
    assert list(states) == FLEET_KINDS
    assert {kind: state for kind, (_, state) in states.items()} == \
        dict.fromkeys(FLEET_KINDS, "created")

    # The role has the three policies of deploy/iam/, filled in for this prefix.
    policies = iam.list_role_policies(RoleName=config.worker_role)["PolicyNames"]
    assert sorted(policies) == ["cloudkon-install", "cloudkon-logs", "cloudkon-worker"]
    worker_policy = json.dumps(iam.get_role_policy(RoleName=config.worker_role,
                                                   PolicyName="cloudkon-worker")["PolicyDocument"])
    assert f"table/{config.lease_table}" in worker_policy and "PREFIX" not in worker_policy
    profile = iam.get_instance_profile(InstanceProfileName=config.worker_role)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [config.worker_role]
    # The wheel is in the bucket, and the user data installs that very object.
    wheel_uri = next(line for line in first.stdout.splitlines()
                     if line.startswith("worker wheel")).split("(")[1].rstrip(")")
    key = wheel_uri.removeprefix(f"s3://{bucket}/")
    assert key.startswith("dist/") and key.endswith("-py3-none-any.whl")
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 10_000
    [version] = ec2.describe_launch_template_versions(
        LaunchTemplateName=config.launch_template, Versions=["$Latest"])["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    user_data = base64.b64decode(data["UserData"]).decode()
    assert f"CLOUDKON_PREFIX={config.prefix}\n" in user_data
    assert f"CLOUDKON_SOURCE={wheel_uri}\n" in user_data
    assert 'CLOUDKON_WORKER_ARGS="--threads 6"\n' in user_data
    assert data["IamInstanceProfile"] == {"Name": config.worker_role}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["ImageId"].startswith("ami-")
    # The group: two instances on spot, a termination hook longer than the drain.
    found = group(config)
    assert (found["MinSize"], found["MaxSize"], found["DesiredCapacity"]) == (0, 4, 2)
    assert len(found["Instances"]) == 2
    distribution = found["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    [hook] = boto3.client("autoscaling", region_name=REGION).describe_lifecycle_hooks(
        AutoScalingGroupName=config.fleet_group)["LifecycleHooks"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["HeartbeatTimeout"] == DRAIN_HOOK_SECONDS > 120

    again = fleet_up(cloudkon, config, "--instances", "2", "--max", "4", "--spot",
                     "--threads", "6")
    assert {kind: state for kind, (_, state) in printed(again.stdout).items()} == \
        dict.fromkeys(FLEET_KINDS, "exists")
    assert len(ec2.describe_launch_template_versions(
        LaunchTemplateName=config.launch_template)["LaunchTemplateVersions"]) == 1

    # What fleet down must leave alone: a user's object beside the wheels, and workloads.
    s3.put_object(Bucket=bucket, Key="dist/mine.whl", Body=b"not ours")
    s3.put_object(Bucket=bucket, Key="workloads/job-1/w.txt", Body=b"sleep 0\n")
    down = cloudkon("fleet", "down", "--prefix", config.prefix, timeout=300)
    assert down.returncode == 0, down.stderr
    assert {kind: state for kind, (_, state) in printed(down.stdout).items()} == \
        dict.fromkeys(FLEET_KINDS, "deleted")
    asg = boto3.client("autoscaling", region_name=REGION)
    assert asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=[config.fleet_group])["AutoScalingGroups"] == []
    assert ec2.describe_launch_templates(Filters=[
        {"Name": "launch-template-name", "Values": [config.launch_template]}])[
        "LaunchTemplates"] == []
    assert config.worker_role not in [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert config.worker_role not in [p["InstanceProfileName"]
                                      for p in iam.list_instance_profiles()["InstanceProfiles"]]
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert left == ["dist/mine.whl", "workloads/job-1/w.txt"]
    sqs = boto3.client("sqs", region_name=REGION)
    assert queue_url(sqs, config.input_queue)  # setup's resources stay
    boto3.client("dynamodb", region_name=REGION).describe_table(TableName=config.lease_table)

    twice = cloudkon("fleet", "down", "--prefix", config.prefix, timeout=300)
    assert twice.returncode == 0, twice.stderr
    assert {kind: state for kind, (_, state) in printed(twice.stdout).items()} == \
        dict.fromkeys(FLEET_KINDS, "absent")


def test_fleet_up_before_setup_says_to_run_setup(aws_config, cloudkon):
    proc = cloudkon("fleet", "up", "--prefix", aws_config.prefix, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cloudkon setup" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--min", "3", "--max", "2"], "--min 3 is above --max 2"),
    (["--instances", "9", "--max", "4"], "--instances 9 is outside --min 0 and --max 4"),
])
def test_fleet_up_bounds_that_cannot_be_are_usage_errors(aws_config, cloudkon, args, message):
    proc = cloudkon("fleet", "up", "--prefix", aws_config.prefix, *args, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"cloudkon: error: {message}"


def status(cloudkon, config):
    proc = cloudkon("fleet", "status", "--prefix", config.prefix, "--json", timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def records(config):
    """The workers' records, read in the test's process (waiting on a subprocess a time
    would be slow)."""
    from fleet.status import fleet_status

    return fleet_status(config).workers


def test_fleet_status_shows_each_workers_beats_and_a_silent_worker_as_stale(
        small_fleet, cloudkon, start_worker):
    config = small_fleet
    [instance] = group(config)["Instances"]
    # Heartbeats every second (visibility 3 s / 3): stale after 3 s without one.
    worker = start_worker(config, "--threads", "2", "--visibility-timeout", "3",
                          "--wait-seconds", "1", "--no-create", "--worker-id", "w-live",
                          "--instance-id", instance["InstanceId"])

    wait_until(lambda: records(config), what="the worker's record")
    code, doc = status(cloudkon, config)
    assert code == 0, doc
    assert (doc["desired"], doc["in_service"], doc["healthy"], doc["problems"]) == (1, 1, True, [])
    assert doc["instances"][0]["instance_id"] == instance["InstanceId"]
    assert doc["instances"][0]["state"] == "InService"
    [record] = doc["workers"]
    assert (record["worker_id"], record["instance_id"], record["threads"], record["busy"],
            record["stale"]) == ("w-live", instance["InstanceId"], 2, 0, False)
    text = cloudkon("fleet", "status", "--prefix", config.prefix, timeout=120)
    assert text.returncode == 0, text.stderr
    assert instance["InstanceId"] in text.stdout and "w-live" in text.stdout

    worker.kill()  # kill -9: no clean exit, so the record stays and stops being renewed

    wait_until(lambda: records(config)[0].stale(time.time()), timeout=15, interval=0.5,
               what="the worker's record gone stale")
    code, doc = status(cloudkon, config)
    assert code == 1 and not doc["healthy"] and doc["workers"][0]["stale"]
    assert doc["problems"][0].startswith("worker w-live is stale: last beat")
    text = cloudkon("fleet", "status", "--prefix", config.prefix, timeout=120)
    assert text.returncode == 1
    assert "STALE" in text.stdout and "not healthy: worker w-live is stale" in text.stdout


def test_a_worker_removes_its_record_at_a_clean_exit(provisioned, cloudkon, start_worker):
    worker = start_worker(provisioned, "--visibility-timeout", "3", "--wait-seconds", "1",
                          "--worker-id", "w-clean")
    wait_until(lambda: records(provisioned), what="the worker's record")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    code, doc = status(cloudkon, provisioned)
    assert doc["workers"] == [] and doc["exists"] is False and code == 1  # no fleet either


def test_fleet_scale_by_hand_and_by_the_provisioner(small_fleet, cloudkon):
    config = small_fleet
    prefix = ["--prefix", config.prefix]

    by_hand = cloudkon("fleet", "scale", "3", *prefix, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    assert "desired 1 -> 3" in by_hand.stdout and "provisioner is off" in by_hand.stdout
    assert group(config)["DesiredCapacity"] == 3
    outside = cloudkon("fleet", "scale", "9", *prefix, timeout=120)
    assert outside.returncode == 2
    assert "9 is outside the fleet's min 0 and max 4" in outside.stderr

    # 30 bundles of about 100 tasks, 500 tasks per worker: 6 workers, at most 4.
    sqs = boto3.client("sqs", region_name=REGION)
    url = queue_url(sqs, config.input_queue)
    for n in range(3):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"bundle {n}-{i}"} for i in range(10)])
    dry = cloudkon("fleet", "scale", "--auto", "--once", "--dry-run", *prefix, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"fleet {config.fleet_group}: would go from 3 to 4 (backlog 30"
                                 " bundles"), dry.stdout
    assert group(config)["DesiredCapacity"] == 3
    auto = cloudkon("fleet", "scale", "--auto", "--once", *prefix, timeout=120)
    assert auto.returncode == 0, auto.stderr
    assert "goes from 3 to 4" in auto.stdout
    assert group(config)["DesiredCapacity"] == 4

    # The queue empties: no scale-in before the idle period (ten minutes).
    sqs.purge_queue(QueueUrl=url)
    idle = cloudkon("fleet", "scale", "--auto", "--once", *prefix, timeout=120)
    assert "stays at 4 (idle for" in idle.stdout, idle.stdout


@pytest.mark.parametrize("args, message", [
    ([], "give either N or --auto"),
    (["2", "--auto"], "give either N or --auto"),
    (["2", "--once"], "--once and --dry-run go with --auto"),
])
def test_fleet_scale_usage_errors(aws_config, cloudkon, args, message):
    proc = cloudkon("fleet", "scale", "--prefix", aws_config.prefix, *args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_fleet_scale_without_a_fleet_says_to_run_fleet_up(provisioned, cloudkon):
    proc = cloudkon("fleet", "scale", "2", "--prefix", provisioned.prefix, timeout=120)
    assert proc.returncode == 2
    assert "run `cloudkon fleet up` first" in proc.stderr and proc.stderr.count("\n") == 1


def test_teardown_warns_about_workers_still_beating(provisioned, cloudkon, start_worker):
    worker = start_worker(provisioned, "--visibility-timeout", "3", "--wait-seconds", "1",
                          "--worker-id", "w-busy")
    wait_until(lambda: records(provisioned), what="the worker's record")
    proc = cloudkon("teardown", "--prefix", provisioned.prefix, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ("cloudkon: warning: 1 worker(s) of prefix" in proc.stderr
            and "still beating (w-busy)" in proc.stderr), proc.stderr
    worker.kill()


def test_the_lambdas_schedule_sizes_the_fleet_and_leaves_a_hand_set_count(small_fleet, cloudkon,
                                                                         tmp_path):
    from chalice.test import Client
    from submit_helpers import chalice_project, load_app

    config = small_fleet
    sqs = boto3.client("sqs", region_name=REGION)
    url = queue_url(sqs, config.input_queue)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"bundle {i}"} for i in range(10)])
    client = Client(load_app(), stage_name="dev",
                    project_dir=str(chalice_project(tmp_path, config)))
    event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                            detail={}, resources=[])
    with client:
        client.lambda_.invoke("provision_workers", event)
    # 10 bundles of about 100 tasks at 500 tasks per worker: 2 workers.
    assert group(config)["DesiredCapacity"] == 2

    by_hand = cloudkon("fleet", "scale", "1", "--prefix", config.prefix, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    with client:
        client.lambda_.invoke("provision_workers", event)
    assert group(config)["DesiredCapacity"] == 1  # the provisioner is off until --auto
