"""`cloudkon fleet status`: the group's instances beside the workers' own registry records.

Healthy means: the group exists, as many instances are in service as it wants, and no
worker's record is stale (its last beat is more than WORKER_STALE_BEATS heartbeat
intervals old: the worker died without removing it, or hangs).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from cloudkon import aws
from cloudkon.aws import call
from cloudkon.backends import WorkerRecord
from cloudkon.backends.dynamodb import DynamoWorkerRegistry
from cloudkon.config import AwsConfig
from cloudkon.errors import NotSetUpError
from fleet.provisioner import Fleet

_IN_SERVICE = "InService"


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str  # the Auto Scaling lifecycle state: Pending, InService, Terminating:Wait, ...
    health: str
    instance_type: str
    zone: str


@dataclass(frozen=True)
class FleetStatus:
    group: str
    exists: bool
    desired: int = 0
    min_size: int = 0
    max_size: int = 0
    instances: list[Instance] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)
    now: float = 0.0
    provisioner: str = ""  # "auto" or "off", and its last reason

    @property
    def in_service(self) -> int:
        return sum(1 for i in self.instances if i.state == _IN_SERVICE)

    @property
    def stale(self) -> list[WorkerRecord]:
        return [w for w in self.workers if w.stale(self.now)]

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.exists:
            found.append(f"no auto scaling group {self.group} (run `cloudkon fleet up`)")
        elif self.in_service < self.desired:
            found.append(f"{self.in_service} instances in service, {self.desired} desired")
        for w in self.stale:
            found.append(f"worker {w.worker_id} is stale: last beat {self.now - w.last_beat:.0f}"
                         " s ago")
        return found

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        workers = [{**w._asdict(), "stale": w.stale(self.now),
                    "seconds_since_beat": round(self.now - w.last_beat, 3)}
                   for w in self.workers]
        return json.dumps({
            "group": self.group, "exists": self.exists, "desired": self.desired,
            "min": self.min_size, "max": self.max_size, "in_service": self.in_service,
            "provisioner": self.provisioner,
            "instances": [asdict(i) for i in self.instances], "workers": workers,
            "healthy": self.healthy, "problems": self.problems,
        }, separators=(", ", ": "))

    def to_text(self) -> str:
        if self.exists:
            lines = [(f"fleet {self.group}: {self.in_service} in service, desired {self.desired}"
                      f" (min {self.min_size}, max {self.max_size}); provisioner"
                      f" {self.provisioner or 'not set up'}")]
        else:
            lines = [f"fleet {self.group}: no auto scaling group"]
        by_instance = {w.instance_id: w for w in self.workers if w.instance_id}
        rows = [("INSTANCE", "STATE", "HEALTH", "WORKER", "LAST BEAT", "BUSY", "TASKS DONE")]
        for i in self.instances:
            w = by_instance.get(i.instance_id)
            rows.append((i.instance_id, i.state, i.health, *self._worker_cells(w)))
        known = {i.instance_id for i in self.instances}
        for w in self.workers:
            if w.instance_id not in known:
                rows.append((w.instance_id or "-", "-", "-", *self._worker_cells(w)))
        if len(rows) > 1:
            widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            lines += ["  " + "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip()
                      for r in rows]
        lines += [f"not healthy: {p}" for p in self.problems]
        return "\n".join(lines)

    def _worker_cells(self, w: WorkerRecord | None) -> tuple[str, str, str, str]:
        if w is None:
            return "(no worker record)", "-", "-", "-"
        beat = f"{self.now - w.last_beat:.0f} s ago" + (" STALE" if w.stale(self.now) else "")
        return w.worker_id, beat, f"{w.busy}/{w.threads}", f"{w.tasks_done:,}"


def fleet_status(config: AwsConfig, now: float | None = None) -> FleetStatus:
    """The fleet of ``config``'s prefix as the group and the workers' records show it."""
    workers = DynamoWorkerRegistry(aws.dynamodb_client(config), config.lease_table).workers()
    now = time.time() if now is None else now
    fleet = Fleet(config)
    settings = fleet.load()
    provisioner = ""
    if settings is not None:
        provisioner = ("auto" if settings.auto else "off") + (
            f" ({settings.last_reason})" if settings.last_reason else "")
    groups = call(f"auto scaling group {config.fleet_group}",
                  fleet.autoscaling.describe_auto_scaling_groups,
                  AutoScalingGroupNames=[config.fleet_group])["AutoScalingGroups"]
    if not groups:
        return FleetStatus(config.fleet_group, False, workers=workers, now=now,
                           provisioner=provisioner)
    group = groups[0]
    instances = [Instance(i["InstanceId"], i["LifecycleState"], i.get("HealthStatus", ""),
                          i.get("InstanceType", ""), i.get("AvailabilityZone", ""))
                 for i in sorted(group.get("Instances", ()), key=lambda i: i["InstanceId"])]
    return FleetStatus(config.fleet_group, True, group["DesiredCapacity"], group["MinSize"],
                       group["MaxSize"], instances, workers, now, provisioner)


def beating_workers(config: AwsConfig, now: float | None = None) -> list[WorkerRecord]:
    """The workers of the prefix whose records are not stale; [] if there is no table."""
    registry = DynamoWorkerRegistry(aws.dynamodb_client(config), config.lease_table)
    try:
        workers = registry.workers()
    except NotSetUpError:  # no table: nothing of the prefix is left to beat
        return []
    now = time.time() if now is None else now
    return [w for w in workers if not w.stale(now)]
