"""`cloudkon fleet up` and `cloudkon fleet down`: the AWS resources of a prefix's fleet.

Up makes, in order, each step looking first and changing only what differs (so running it
again prints every resource as ``exists``):

1. the worker role ``PREFIX-worker`` with the policies of deploy/iam/ (worker, install,
   logs) filled in, and its instance profile;
2. the wheel of this checkout in the workload bucket, under ``dist/SHA256/`` (its content
   hash, so a changed project is a new object and a new launch template version);
3. the launch template ``PREFIX-worker``: the AMI (latest Amazon Linux 2023 unless
   ``--ami``), the instance profile, IMDSv2, and deploy/user-data.sh with its settings
   filled in (prefix, the wheel's s3:// URL, the worker's options);
4. the Auto Scaling group ``PREFIX-workers`` on the default VPC's default subnets (unless
   ``--subnet``), on spot with a mixed-instances policy if asked;
5. its termination lifecycle hook ``PREFIX-drain``, DRAIN_HOOK_SECONDS long, so that an
   instance taken out of service keeps running while its worker drains;
6. the provisioner's settings item (fleet.provisioner).

Down removes exactly these, the group first (scaled to 0 and its instances left to drain).
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

from botocore.exceptions import ClientError

from cloudkon import aws
from cloudkon.aws import call
from cloudkon.backends.resources import (
    ABSENT,
    CREATED,
    DELETED,
    EXISTS,
    UPDATED,
    Resource,
    check,
)
from cloudkon.config import AwsConfig, FleetConfig
from cloudkon.errors import NotSetUpError, UsageError
from cloudkon.limits import (
    AL2023_AMI_PARAMETER,
    DEFAULT_FLEET_INSTANCES,
    DRAIN_HOOK_SECONDS,
    IMDS_HOP_LIMIT,
)
from fleet import wheel as wheels
from fleet.capacity import ScalingPolicy, ScalingState
from fleet.provisioner import SETTINGS_KEY, Fleet, FleetSettings

WHEEL_FOLDER = "dist/"
_WHEEL_KEY = re.compile(r"dist/[0-9a-f]{16}/cloudkon-[^/]+\.whl")
# The inline policies of the worker role: name -> file in deploy/iam/.
ROLE_POLICIES = {
    "cloudkon-worker": "worker-policy.json",
    "cloudkon-install": "worker-install-policy.json",
    "cloudkon-logs": "worker-logs-policy.json",
}
PREFIX_TAG = "cloudkon:prefix"
_TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
_GROUP_POLL_SECONDS = 5
_NO_TEMPLATE = ("InvalidLaunchTemplateName.NotFoundException",
                "InvalidLaunchTemplateId.NotFound")
_NO_ENTITY = ("NoSuchEntity",)


class _Context:
    """What every step needs: clients, the account, region and source checkout."""

    def __init__(self, config: AwsConfig) -> None:
        self.config = config
        self.account = aws.account_id(config)
        self.iam = aws.client("iam", config)
        self.ec2 = aws.client("ec2", config)
        self.s3 = aws.s3_client(config)
        self.autoscaling = aws.client("autoscaling", config)
        self.region = self.ec2.meta.region_name
        self.bucket = config.bucket(config.bucket_suffix or self.account)

    def policy(self, root: Path, name: str) -> str:
        """A deploy/iam/ document with REGION, ACCOUNT and PREFIX filled in."""
        text = (root / "deploy" / "iam" / name).read_text(encoding="utf-8")
        for placeholder, value in (("PREFIX-workloads-ACCOUNT", self.bucket),
                                   ("REGION", self.region), ("ACCOUNT", self.account),
                                   ("PREFIX", self.config.prefix)):
            text = text.replace(placeholder, value)
        return json.dumps(json.loads(text), separators=(",", ":"))


# --- up ---------------------------------------------------------------------------------------


def up(config: AwsConfig, fleet: FleetConfig, now: float | None = None) -> list[Resource]:
    """Create or bring up to date the fleet of ``config``'s prefix as ``fleet`` says."""
    root = wheels.source_root()
    ctx = _Context(config)
    _check_setup(ctx)
    done = [_ensure_role(ctx, root), _ensure_instance_profile(ctx)]
    wheel = wheels.build(root)
    resource, source = _ensure_wheel(ctx, wheel)
    done.append(resource)
    done.append(_ensure_launch_template(ctx, fleet, _user_data(root, config, source, fleet)))
    done.append(_ensure_group(ctx, fleet))
    done.append(_ensure_hook(ctx))
    done.append(_ensure_settings(config, fleet, time.time() if now is None else now))
    return done


def _check_setup(ctx: _Context) -> None:
    """NotSetUpError unless `cloudkon setup` made the queues, table and bucket."""
    check(ctx.config)
    try:
        call(f"bucket {ctx.bucket}", ctx.s3.head_bucket, expected=("404", "NoSuchBucket"),
             Bucket=ctx.bucket)
    except ClientError:
        raise NotSetUpError(f"bucket {ctx.bucket}: it does not exist (run `cloudkon setup` to"
                            " create it)") from None


def _ensure_role(ctx: _Context, root: Path) -> Resource:
    name = ctx.config.worker_role
    state = EXISTS
    try:
        call(f"role {name}", ctx.iam.get_role, expected=_NO_ENTITY, RoleName=name)
    except ClientError:
        call(f"create role {name}", ctx.iam.create_role, RoleName=name,
             AssumeRolePolicyDocument=ctx.policy(root, "ec2-trust-policy.json"),
             Description=f"CloudKon workers of prefix {ctx.config.prefix}",
             Tags=[{"Key": PREFIX_TAG, "Value": ctx.config.prefix}])
        state = CREATED
    changed = []
    for policy, file in ROLE_POLICIES.items():
        wanted = ctx.policy(root, file)
        try:
            current = call(f"policy {policy} of role {name}", ctx.iam.get_role_policy,
                           expected=_NO_ENTITY, RoleName=name, PolicyName=policy)["PolicyDocument"]
        except ClientError:
            current = None
        if _document(current) != json.loads(wanted):
            call(f"put policy {policy} on role {name}", ctx.iam.put_role_policy, RoleName=name,
                 PolicyName=policy, PolicyDocument=wanted)
            changed.append(policy)
    if changed and state == EXISTS:
        state = UPDATED
    detail = f"policies {', '.join(ROLE_POLICIES)}"
    return Resource("worker role", name, state,
                    f"{detail}; changed {', '.join(changed)}" if state == UPDATED else detail)


def _document(value) -> dict | None:
    """A policy document as IAM returns it (a dict, or URL-encoded JSON text), as a dict."""
    if value is None or isinstance(value, dict):
        return value
    from urllib.parse import unquote

    return json.loads(unquote(value))


def _ensure_instance_profile(ctx: _Context) -> Resource:
    name = role = ctx.config.worker_role
    try:
        profile = call(f"instance profile {name}", ctx.iam.get_instance_profile,
                       expected=_NO_ENTITY, InstanceProfileName=name)["InstanceProfile"]
        state = EXISTS
    except ClientError:
        call(f"create instance profile {name}", ctx.iam.create_instance_profile,
             InstanceProfileName=name, Tags=[{"Key": PREFIX_TAG, "Value": ctx.config.prefix}])
        profile, state = {"Roles": []}, CREATED
    if role not in [r["RoleName"] for r in profile.get("Roles", ())]:
        call(f"add role {role} to instance profile {name}", ctx.iam.add_role_to_instance_profile,
             InstanceProfileName=name, RoleName=role)
        state = UPDATED if state == EXISTS else state
    return Resource("instance profile", name, state, f"role {role}")


def _ensure_wheel(ctx: _Context, wheel: wheels.Wheel) -> tuple[Resource, str]:
    key = f"{WHEEL_FOLDER}{wheel.sha256[:16]}/{wheel.name}"
    uri = f"s3://{ctx.bucket}/{key}"
    try:
        call(f"object {uri}", ctx.s3.head_object, expected=("404", "NoSuchKey"),
             Bucket=ctx.bucket, Key=key)
        return Resource("worker wheel", wheel.name, EXISTS, uri), uri
    except ClientError:
        pass
    call(f"upload {uri}", ctx.s3.put_object, Bucket=ctx.bucket, Key=key, Body=wheel.data,
         ChecksumAlgorithm="SHA256")
    return Resource("worker wheel", wheel.name, CREATED, uri), uri


def _user_data(root: Path, config: AwsConfig, source: str, fleet: FleetConfig) -> str:
    """deploy/user-data.sh with its three settings filled in."""
    text = (root / "deploy" / "user-data.sh").read_text(encoding="utf-8")
    threads = str(fleet.threads) if fleet.threads else "$(nproc)"
    key = f" --signing-key {fleet.signing_key}" if fleet.signing_key else ""
    # The bucket's suffix, so that workers spill large results to the deployment's bucket.
    suffix = f" --bucket-suffix {config.bucket_suffix}" if config.bucket_suffix else ""
    settings = {"CLOUDKON_PREFIX": config.prefix, "CLOUDKON_SOURCE": source,
                "CLOUDKON_WORKER_ARGS": f'"--threads {threads}{suffix}{key}"'}
    for name, value in settings.items():
        text, n = re.subn(rf"^{name}=.*$", lambda _m, n=name, v=value: f"{n}={v}", text,
                          count=1, flags=re.MULTILINE)
        if n != 1:
            raise UsageError(f"deploy/user-data.sh: no setting {name}=")
    return text


def _ami(ctx: _Context, fleet: FleetConfig) -> str:
    if fleet.ami:
        return fleet.ami
    ssm = aws.client("ssm", ctx.config)
    return call(f"SSM parameter {AL2023_AMI_PARAMETER}", ssm.get_parameter,
                Name=AL2023_AMI_PARAMETER)["Parameter"]["Value"]


def _template_data(ctx: _Context, fleet: FleetConfig, user_data: str) -> dict:
    tags = [{"Key": "Name", "Value": ctx.config.launch_template},
            {"Key": PREFIX_TAG, "Value": ctx.config.prefix}]
    return {
        "ImageId": _ami(ctx, fleet),
        "InstanceType": fleet.instance_type,
        "IamInstanceProfile": {"Name": ctx.config.worker_role},
        "UserData": base64.b64encode(user_data.encode("utf-8")).decode("ascii"),
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                            "HttpPutResponseHopLimit": IMDS_HOP_LIMIT},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
    }


def _ensure_launch_template(ctx: _Context, fleet: FleetConfig, user_data: str) -> Resource:
    name = ctx.config.launch_template
    data = _template_data(ctx, fleet, user_data)
    detail = f"{data['ImageId']}, {fleet.instance_type}, IMDSv2"
    try:
        current = call(f"launch template {name}", ctx.ec2.describe_launch_template_versions,
                       expected=_NO_TEMPLATE, LaunchTemplateName=name,
                       Versions=["$Latest"])["LaunchTemplateVersions"][0]
    except ClientError:
        call(f"create launch template {name}", ctx.ec2.create_launch_template,
             LaunchTemplateName=name, LaunchTemplateData=data)
        return Resource("launch template", name, CREATED, detail)
    have = current["LaunchTemplateData"]
    changed = sorted(k for k, v in data.items() if have.get(k) != v)
    if not changed:
        return Resource("launch template", name, EXISTS, detail)
    version = call(f"new version of launch template {name}",
                   ctx.ec2.create_launch_template_version, LaunchTemplateName=name,
                   LaunchTemplateData=data)["LaunchTemplateVersion"]["VersionNumber"]
    call(f"default version of launch template {name}", ctx.ec2.modify_launch_template,
         LaunchTemplateName=name, DefaultVersion=str(version))
    return Resource("launch template", name, UPDATED,
                    f"{detail}; version {version}: changed {', '.join(changed)}")


def _subnets(ctx: _Context, fleet: FleetConfig) -> list[str]:
    if fleet.subnets:
        return list(fleet.subnets)
    vpcs = call("find the default VPC", ctx.ec2.describe_vpcs,
                Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UsageError(f"region {ctx.region} has no default VPC: name the subnets with"
                         " --subnet")
    subnets = call("find the default subnets", ctx.ec2.describe_subnets,
                   Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
                            {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    if not subnets:
        raise UsageError(f"the default VPC of {ctx.region} has no default subnets: name the"
                         " subnets with --subnet")
    return sorted(s["SubnetId"] for s in subnets)


def _launch(ctx: _Context, fleet: FleetConfig) -> dict:
    """The group's LaunchTemplate, or on spot its MixedInstancesPolicy."""
    template = {"LaunchTemplateName": ctx.config.launch_template, "Version": "$Latest"}
    if not fleet.spot:
        return {"LaunchTemplate": template}
    return {"MixedInstancesPolicy": {
        "LaunchTemplate": {"LaunchTemplateSpecification": template,
                           "Overrides": [{"InstanceType": fleet.instance_type}]},
        "InstancesDistribution": {"OnDemandBaseCapacity": 0,
                                  "OnDemandPercentageAboveBaseCapacity": 0,
                                  "SpotAllocationStrategy": "price-capacity-optimized"},
    }}


def _group_detail(group: dict, fleet: FleetConfig) -> str:
    market = "spot" if fleet.spot else "on-demand"
    return (f"min {group['MinSize']}, max {group['MaxSize']}, desired"
            f" {group['DesiredCapacity']}, {fleet.instance_type} {market}")


def _ensure_group(ctx: _Context, fleet: FleetConfig) -> Resource:
    name = ctx.config.fleet_group
    groups = call(f"auto scaling group {name}", ctx.autoscaling.describe_auto_scaling_groups,
                  AutoScalingGroupNames=[name])["AutoScalingGroups"]
    subnets = _subnets(ctx, fleet)
    launch = _launch(ctx, fleet)
    if not groups:
        desired = fleet.instances if fleet.instances is not None else max(
            fleet.min_size, min(fleet.max_size, DEFAULT_FLEET_INSTANCES))
        wanted = {"MinSize": fleet.min_size, "MaxSize": fleet.max_size,
                  "DesiredCapacity": desired}
        call(f"create auto scaling group {name}", ctx.autoscaling.create_auto_scaling_group,
             AutoScalingGroupName=name, VPCZoneIdentifier=",".join(subnets), **wanted, **launch,
             Tags=[{"Key": PREFIX_TAG, "Value": ctx.config.prefix, "PropagateAtLaunch": True}])
        return Resource("auto scaling group", name, CREATED, _group_detail(wanted, fleet))
    group = groups[0]
    wanted = {"MinSize": fleet.min_size, "MaxSize": fleet.max_size}
    if fleet.instances is not None:
        wanted["DesiredCapacity"] = fleet.instances
    elif not fleet.min_size <= group["DesiredCapacity"] <= fleet.max_size:
        wanted["DesiredCapacity"] = max(fleet.min_size,
                                        min(fleet.max_size, group["DesiredCapacity"]))
    changed = {k: v for k, v in wanted.items() if group.get(k) != v}
    if set(group.get("VPCZoneIdentifier", "").split(",")) != set(subnets):
        changed["VPCZoneIdentifier"] = ",".join(subnets)
    have = {k: group[k] for k in ("LaunchTemplate", "MixedInstancesPolicy") if k in group}
    if _launch_differs(have, launch):
        changed.update(launch)
    if not changed:
        return Resource("auto scaling group", name, EXISTS, _group_detail(group, fleet))
    call(f"update auto scaling group {name}", ctx.autoscaling.update_auto_scaling_group,
         AutoScalingGroupName=name, **changed)
    shown = {**group, **{k: v for k, v in changed.items() if k in wanted}}
    return Resource("auto scaling group", name, UPDATED,
                    f"{_group_detail(shown, fleet)}; changed {', '.join(sorted(changed))}")


def _launch_differs(have: dict, wanted: dict) -> bool:
    """Whether the group launches otherwise than ``wanted`` (template name, market, type)."""
    if set(have) != set(wanted):
        return True
    if "LaunchTemplate" in wanted:
        return have["LaunchTemplate"].get("LaunchTemplateName") != \
            wanted["LaunchTemplate"]["LaunchTemplateName"]
    h, w = have["MixedInstancesPolicy"], wanted["MixedInstancesPolicy"]
    spec = h.get("LaunchTemplate", {}).get("LaunchTemplateSpecification", {})
    return (spec.get("LaunchTemplateName")
            != w["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateName"]
            or h.get("LaunchTemplate", {}).get("Overrides") != w["LaunchTemplate"]["Overrides"]
            or h.get("InstancesDistribution", {}).get("OnDemandPercentageAboveBaseCapacity")
            != 0)


def _ensure_hook(ctx: _Context) -> Resource:
    name, group = ctx.config.drain_hook, ctx.config.fleet_group
    detail = f"on termination: hold {DRAIN_HOOK_SECONDS} s for the worker's drain"
    hooks = call(f"lifecycle hook {name}", ctx.autoscaling.describe_lifecycle_hooks,
                 AutoScalingGroupName=group, LifecycleHookNames=[name])["LifecycleHooks"]
    if hooks and hooks[0].get("HeartbeatTimeout") == DRAIN_HOOK_SECONDS \
            and hooks[0].get("LifecycleTransition") == _TERMINATING \
            and hooks[0].get("DefaultResult") == "CONTINUE":
        return Resource("lifecycle hook", name, EXISTS, detail)
    call(f"put lifecycle hook {name}", ctx.autoscaling.put_lifecycle_hook,
         LifecycleHookName=name, AutoScalingGroupName=group, LifecycleTransition=_TERMINATING,
         HeartbeatTimeout=DRAIN_HOOK_SECONDS, DefaultResult="CONTINUE")
    return Resource("lifecycle hook", name, UPDATED if hooks else CREATED, detail)


def _ensure_settings(config: AwsConfig, fleet: FleetConfig, now: float) -> Resource:
    manager = Fleet(config)
    settings = manager.load()
    policy = ScalingPolicy(fleet.min_size, fleet.max_size,
                           tasks_per_worker=fleet.tasks_per_worker)
    name = f"{config.lease_table}/{SETTINGS_KEY}"
    detail = f"{policy.tasks_per_worker:,} tasks per worker"
    if settings is None:
        # The idle period counts from now: a new fleet is not shrunk before its first job.
        manager.save(FleetSettings(config.fleet_group, policy,
                                   ScalingState(last_change=now, last_busy=now)))
        return Resource("provisioner", name, CREATED, detail)
    if settings.policy == policy and settings.group == config.fleet_group:
        return Resource("provisioner", name, EXISTS, detail)
    manager.save(FleetSettings(config.fleet_group, policy, settings.state, settings.auto,
                               settings.last_reason))
    return Resource("provisioner", name, UPDATED, detail)


# --- down -------------------------------------------------------------------------------------


def down(config: AwsConfig, drain_seconds: float = DRAIN_HOOK_SECONDS + 60) -> list[Resource]:
    """Delete what `up` made (absent ones are reported as such): the group, after its
    instances had up to ``drain_seconds`` to drain, then the rest."""
    ctx = _Context(config)
    done = _delete_group(ctx, drain_seconds)
    done.append(_delete_template(ctx))
    done.append(_delete_instance_profile(ctx))
    done.append(_delete_role(ctx))
    done.append(_delete_wheels(ctx))
    name = f"{config.lease_table}/{SETTINGS_KEY}"
    done.append(Resource("provisioner", name, DELETED if Fleet(config).forget() else ABSENT))
    return done


def _delete_group(ctx: _Context, drain_seconds: float) -> list[Resource]:
    name, hook = ctx.config.fleet_group, ctx.config.drain_hook
    describe = ctx.autoscaling.describe_auto_scaling_groups
    groups = call(f"auto scaling group {name}", describe,
                  AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not groups:
        return [Resource("auto scaling group", name, ABSENT), Resource("lifecycle hook", hook,
                                                                       ABSENT)]
    hooks = call(f"lifecycle hook {hook}", ctx.autoscaling.describe_lifecycle_hooks,
                 AutoScalingGroupName=name, LifecycleHookNames=[hook])["LifecycleHooks"]
    count = len(groups[0].get("Instances", ()))
    if count:
        # Scaled in like any other scale-in: each worker drains while the hook holds it.
        call(f"scale group {name} to 0", ctx.autoscaling.update_auto_scaling_group,
             AutoScalingGroupName=name, MinSize=0, MaxSize=0, DesiredCapacity=0)
        deadline = time.monotonic() + drain_seconds
        while (left := call(f"auto scaling group {name}", describe, AutoScalingGroupNames=[name])
               ["AutoScalingGroups"]) and left[0].get("Instances"):
            if time.monotonic() > deadline:
                break  # ForceDelete below terminates what is left
            time.sleep(_GROUP_POLL_SECONDS)
    call(f"delete auto scaling group {name}", ctx.autoscaling.delete_auto_scaling_group,
         AutoScalingGroupName=name, ForceDelete=True)
    return [Resource("auto scaling group", name, DELETED,
                     f"{count} instances terminated" if count else ""),
            Resource("lifecycle hook", hook, DELETED if hooks else ABSENT)]


def _delete_template(ctx: _Context) -> Resource:
    name = ctx.config.launch_template
    found = call(f"launch template {name}", ctx.ec2.describe_launch_templates,
                 Filters=[{"Name": "launch-template-name", "Values": [name]}])["LaunchTemplates"]
    if not found:
        return Resource("launch template", name, ABSENT)
    try:
        call(f"delete launch template {name}", ctx.ec2.delete_launch_template,
             expected=_NO_TEMPLATE, LaunchTemplateName=name)
    except ClientError:
        return Resource("launch template", name, ABSENT)  # deleted by someone else meanwhile
    return Resource("launch template", name, DELETED)


def _delete_instance_profile(ctx: _Context) -> Resource:
    name = ctx.config.worker_role
    try:
        profile = call(f"instance profile {name}", ctx.iam.get_instance_profile,
                       expected=_NO_ENTITY, InstanceProfileName=name)["InstanceProfile"]
    except ClientError:
        return Resource("instance profile", name, ABSENT)
    for role in profile.get("Roles", ()):
        call(f"remove role from instance profile {name}",
             ctx.iam.remove_role_from_instance_profile, InstanceProfileName=name,
             RoleName=role["RoleName"])
    call(f"delete instance profile {name}", ctx.iam.delete_instance_profile,
         InstanceProfileName=name)
    return Resource("instance profile", name, DELETED)


def _delete_role(ctx: _Context) -> Resource:
    name = ctx.config.worker_role
    try:
        policies = call(f"policies of role {name}", ctx.iam.list_role_policies,
                        expected=_NO_ENTITY, RoleName=name)["PolicyNames"]
    except ClientError:
        return Resource("worker role", name, ABSENT)
    for policy in policies:
        call(f"delete policy {policy} of role {name}", ctx.iam.delete_role_policy,
             RoleName=name, PolicyName=policy)
    # Managed policies attached by hand (AmazonSSMManagedInstanceCore) are detached, not deleted.
    attached = call(f"attached policies of role {name}", ctx.iam.list_attached_role_policies,
                    RoleName=name)["AttachedPolicies"]
    for policy in attached:
        call(f"detach policy {policy['PolicyName']} from role {name}",
             ctx.iam.detach_role_policy, RoleName=name, PolicyArn=policy["PolicyArn"])
    call(f"delete role {name}", ctx.iam.delete_role, RoleName=name)
    detached = f"; detached {', '.join(p['PolicyName'] for p in attached)}" if attached else ""
    return Resource("worker role", name, DELETED, f"policies {', '.join(policies)}{detached}")


def _delete_wheels(ctx: _Context) -> Resource:
    where = f"s3://{ctx.bucket}/{WHEEL_FOLDER}"
    try:
        keys = []
        for page in ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=ctx.bucket,
                                                                     Prefix=WHEEL_FOLDER):
            keys += [o["Key"] for o in page.get("Contents", ()) if _WHEEL_KEY.fullmatch(o["Key"])]
    except ClientError as exc:
        if aws.error_code(exc) in ("NoSuchBucket", "404"):
            return Resource("worker wheel", where, ABSENT)
        raise aws.translate(exc, f"list {where}") from exc
    if not keys:
        return Resource("worker wheel", where, ABSENT)
    for key in keys:
        call(f"delete s3://{ctx.bucket}/{key}", ctx.s3.delete_object, Bucket=ctx.bucket, Key=key)
    return Resource("worker wheel", where, DELETED, f"{len(keys)} wheels")
