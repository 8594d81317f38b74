"""The provisioner: sizes a prefix's Auto Scaling group to the backlog of its input queue.

It runs as `cloudkon fleet scale --auto` (a decision a minute) and as the Lambda's
scheduled function (app.py, every minute). Each run reads the queue's message counts and
the group's desired count, asks :func:`fleet.capacity.decide`, sets the new count and keeps
the state. The policy (bounds, tasks per worker, cool-down, idle period) and that state are
one item of the lease table, ``_fleet#settings``, written by `fleet up`; the item's ``auto``
says whether the provisioner may act: `fleet scale N` turns it off (a count set by hand
stays), `fleet scale --auto` turns it back on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace

from botocore.exceptions import ClientError

from cloudkon import aws
from cloudkon.aws import call
from cloudkon.backends.dynamodb import KEY
from cloudkon.config import DEFAULT_PREFIX, AwsConfig
from cloudkon.errors import CodecError, NotSetUpError, UsageError
from fleet.capacity import Decision, ScalingPolicy, ScalingState, decide

log = logging.getLogger(__name__)

SETTINGS_KEY = "_fleet#settings"


@dataclass(frozen=True)
class FleetSettings:
    """The fleet's item in the lease table: its group, policy, state and whether the
    provisioner acts on it."""

    group: str
    policy: ScalingPolicy
    state: ScalingState
    auto: bool = True
    last_reason: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FleetSettings:
        try:
            doc = json.loads(text)
            return cls(doc["group"], ScalingPolicy(**doc["policy"]), ScalingState(**doc["state"]),
                       bool(doc.get("auto", True)), str(doc.get("last_reason", "")))
        except (ValueError, TypeError, KeyError) as exc:
            raise CodecError(f"not fleet settings: {exc}") from None


class Fleet:
    """The Auto Scaling group, input queue and settings item of one prefix. Clients are
    made when first wanted."""

    def __init__(self, config: AwsConfig) -> None:
        self.config = config

    @functools.cached_property
    def autoscaling(self):
        return aws.client("autoscaling", self.config)

    @functools.cached_property
    def dynamodb(self):
        return aws.dynamodb_client(self.config)

    @functools.cached_property
    def sqs(self):
        return aws.sqs_client(self.config)

    # --- the settings item ----------------------------------------------------------------

    def load(self) -> FleetSettings | None:
        """The fleet's settings, or None if `fleet up` has not recorded any."""
        table = self.config.lease_table
        item = call(f"table {table} ({SETTINGS_KEY})", self.dynamodb.get_item, TableName=table,
                    Key={KEY: {"S": SETTINGS_KEY}}, ConsistentRead=True).get("Item")
        return FleetSettings.from_json(item["settings"]["S"]) if item else None

    def settings(self) -> FleetSettings:
        """The fleet's settings; NotSetUpError if there is no fleet."""
        settings = self.load()
        if settings is None:
            raise NotSetUpError(f"no fleet for prefix {self.config.prefix}: run `cloudkon"
                                " fleet up` first")
        return settings

    def save(self, settings: FleetSettings) -> None:
        table = self.config.lease_table
        call(f"table {table} ({SETTINGS_KEY})", self.dynamodb.put_item, TableName=table,
             Item={KEY: {"S": SETTINGS_KEY}, "settings": {"S": settings.to_json()}})

    def forget(self) -> bool:
        """Delete the settings item; False if there was none."""
        table = self.config.lease_table
        try:
            old = call(f"table {table} ({SETTINGS_KEY})", self.dynamodb.delete_item,
                       expected=("ResourceNotFoundException",), TableName=table,
                       Key={KEY: {"S": SETTINGS_KEY}}, ReturnValues="ALL_OLD")
        except ClientError:
            return False  # no table, so no settings either
        return "Attributes" in old

    # --- what is measured and set ---------------------------------------------------------

    def backlog(self) -> tuple[int, int]:
        """The input queue's messages: (visible or delayed, in flight), as SQS counts them
        (approximately)."""
        name = self.config.input_queue
        url = call(f"queue {name}", self.sqs.get_queue_url, QueueName=name)["QueueUrl"]
        attrs = call(f"queue {name}", self.sqs.get_queue_attributes, QueueUrl=url,
                     AttributeNames=["ApproximateNumberOfMessages",
                                     "ApproximateNumberOfMessagesDelayed",
                                     "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attrs.get("ApproximateNumberOfMessages", 0))
                + int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
                int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)))

    def group(self, name: str) -> dict:
        """The group's description; NotSetUpError if it does not exist."""
        groups = call(f"auto scaling group {name}", self.autoscaling.describe_auto_scaling_groups,
                      AutoScalingGroupNames=[name])["AutoScalingGroups"]
        if not groups:
            raise NotSetUpError(f"auto scaling group {name} does not exist: run `cloudkon fleet"
                                " up`")
        return groups[0]

    def set_desired(self, name: str, count: int) -> None:
        call(f"set the desired count of group {name}", self.autoscaling.set_desired_capacity,
             AutoScalingGroupName=name, DesiredCapacity=count, HonorCooldown=False)

    # --- the two ways to scale ------------------------------------------------------------

    def scale_to(self, count: int) -> tuple[int, int]:
        """Set the desired count by hand and stop the provisioner from changing it; return
        (the count before, the count now). UsageError outside the group's bounds."""
        settings = self.settings()
        group = self.group(settings.group)
        if not group["MinSize"] <= count <= group["MaxSize"]:
            raise UsageError(f"{count} is outside the fleet's min {group['MinSize']} and max"
                             f" {group['MaxSize']} (change them with `cloudkon fleet up --min N"
                             " --max N`)")
        before = group["DesiredCapacity"]
        self.set_desired(settings.group, count)
        now = time.time()
        direction = 1 if count > before else -1 if count < before else 0
        state = replace(settings.state, last_change=now,
                        last_direction=direction or settings.state.last_direction)
        self.save(replace(settings, state=state, auto=False,
                          last_reason=f"set to {count} by hand"))
        return before, count

    def scale_auto(self, dry_run: bool = False, now: float | None = None) -> Decision:
        """One decision of the provisioner, applied (and its state kept) unless ``dry_run``;
        it also turns the provisioner on."""
        settings = self.settings()
        decision = self.decide(settings, now)
        if not dry_run:
            self.apply(settings, decision)
        return decision

    def decide(self, settings: FleetSettings, now: float | None = None) -> Decision:
        visible, in_flight = self.backlog()
        current = self.group(settings.group)["DesiredCapacity"]
        return decide(settings.policy, visible, in_flight, current, settings.state,
                      time.time() if now is None else now)

    def apply(self, settings: FleetSettings, decision: Decision) -> None:
        if decision.changes:
            self.set_desired(settings.group, decision.desired)
            log.info("fleet %s: desired count %d -> %d: %s", settings.group, decision.current,
                     decision.desired, decision.reason)
        self.save(replace(settings, state=decision.state, auto=True,
                          last_reason=decision.reason))


def describe(group: str, decision: Decision, dry_run: bool = False) -> str:
    """One line saying what a decision does to the group."""
    if not decision.changes:
        return f"fleet {group}: stays at {decision.current} ({decision.reason})"
    verb = "would go" if dry_run else "goes"
    return f"fleet {group}: {verb} from {decision.current} to {decision.desired} ({decision.reason})"


# The Chalice stage's variable that names the prefix, as for the splitter
# (submitter/s3_lambda.py).
PREFIX_VARIABLE = "CLOUDKON_PREFIX"


def on_lambda_schedule() -> Decision | None:
    """What app.py's scheduled function does: :func:`on_schedule` for the stage's prefix."""
    logging.getLogger("fleet").setLevel(logging.INFO)  # the Lambda's root logs WARNING
    return on_schedule(AwsConfig(prefix=os.environ.get(PREFIX_VARIABLE) or DEFAULT_PREFIX))


def on_schedule(config: AwsConfig) -> Decision | None:
    """The Lambda's scheduled run: one decision, applied, if the prefix has a fleet whose
    provisioner is on; None otherwise."""
    fleet = Fleet(config)
    settings = fleet.load()
    if settings is None or not settings.auto:
        log.info("prefix %s: %s; nothing to do", config.prefix,
                 "no fleet" if settings is None else "provisioner off (fleet scale N)")
        return None
    decision = fleet.decide(settings)
    fleet.apply(settings, decision)
    log.info("%s", describe(settings.group, decision))
    return decision
