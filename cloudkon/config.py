"""Configuration, read once at the edge (CLI flags, then environment, then defaults) and
passed down frozen."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudkon.errors import UsageError
from cloudkon.limits import (
    DEFAULT_BUNDLE_MS,
    DEFAULT_BUNDLE_SIZE,
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_FLEET_MAX,
    DEFAULT_FLEET_MIN,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_LIVENESS_SECONDS,
    DEFAULT_REPLAY_WINDOW_SECONDS,
    DEFAULT_TAIL_BYTES,
    DEFAULT_TASK_TIMEOUT,
    DEFAULT_TASKS_PER_WORKER,
    DEFAULT_VISIBILITY_SECONDS,
    HEARTBEATS_PER_VISIBILITY,
    MAX_TAIL_BYTES,
    SANDBOX_PORT,
    SANDBOX_REGION,
    WORKER_WAIT_SECONDS,
)
from cloudkon.taskenv import check_names


@dataclass(frozen=True)
class RunConfig:
    """How to run one workload locally."""

    workload: str
    job_id: str
    workers: int = 4
    task_timeout: float | None = DEFAULT_TASK_TIMEOUT  # seconds; None: no limit
    bundle_size: int = DEFAULT_BUNDLE_SIZE
    bundle_ms: float = DEFAULT_BUNDLE_MS
    tail_bytes: int = DEFAULT_TAIL_BYTES
    strict: bool = False

    def __post_init__(self) -> None:
        check_tail_bytes(self.tail_bytes)


def check_tail_bytes(tail_bytes: int) -> int:
    """``tail_bytes`` if it is within 0 and MAX_TAIL_BYTES; else UsageError naming the option."""
    if not 0 <= tail_bytes <= MAX_TAIL_BYTES:
        raise UsageError(f"--tail-bytes {tail_bytes}: a result keeps at most {MAX_TAIL_BYTES}"
                         " bytes of the end of stdout and of stderr")
    return tail_bytes


# A prefix names every AWS resource of one deployment. S3 bucket names are the strictest
# (lowercase, digits, hyphens, at most 63 characters) and the bucket's name adds
# "-workloads-" and a 12-digit account id, so a prefix is at most 40 such characters.
PREFIX_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
DEFAULT_PREFIX = "cloudkon"


def _prefixed(name: str) -> property:
    """A resource's name, read-only: the deployment's prefix, a hyphen and ``name``."""
    return property(lambda config: f"{config.prefix}-{name}")


@dataclass(frozen=True)
class AwsConfig:
    """Where the remote flavour's AWS resources are: every name derives from the prefix.

    ``region`` and ``endpoint_url`` None leave them to boto3's own resolution
    (AWS_DEFAULT_REGION or the profile; AWS_ENDPOINT_URL or the profile).
    """

    prefix: str = DEFAULT_PREFIX
    region: str | None = None
    endpoint_url: str | None = None
    bucket_suffix: str | None = None  # None: the account id
    # Where the deployment's signing key is (cloudkon/signing.py): "file:/PATH" or
    # "ssm:/NAME"; None: bundles and results are not signed.
    signing_key: str | None = None

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.fullmatch(self.prefix):
            raise UsageError(
                f"--prefix {self.prefix!r}: use 1 to 40 lowercase letters, digits and hyphens,"
                " starting and ending with a letter or digit (it becomes part of an S3 bucket name)"
            )

    input_queue = _prefixed("input")
    dead_letter_queue = _prefixed("input-dlq")
    output_queue = _prefixed("output")
    lease_table = _prefixed("leases")
    # The fleet of `cloudkon fleet up`: the workers' role and instance profile, launch
    # template, Auto Scaling group and its termination hook, and their CloudWatch log group.
    worker_role = _prefixed("worker")
    launch_template = _prefixed("worker")
    fleet_group = _prefixed("workers")
    drain_hook = _prefixed("drain")

    @property
    def log_group(self) -> str:
        return f"/cloudkon/{self.prefix}/workers"

    def bucket(self, account: str) -> str:
        """The workload bucket's name, made unique by the suffix or the account id."""
        return f"{self.prefix}-workloads-{self.bucket_suffix or account}"


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker daemon runs."""

    worker_id: str  # names the worker in leases, logs and results: host:pid by default
    threads: int = 4
    visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS  # also the lease
    wait_seconds: float = WORKER_WAIT_SECONDS  # one receive's long poll (SQS: whole seconds)
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    liveness_seconds: float = DEFAULT_LIVENESS_SECONDS
    task_timeout: float | None = DEFAULT_TASK_TIMEOUT
    tail_bytes: int = DEFAULT_TAIL_BYTES
    instance_id: str = ""  # the EC2 instance it runs on, as the unit says; "" elsewhere
    emf_metrics: bool = False  # log a CloudWatch EMF line per bundle (cloudkon.metrics)
    # Finished bundles' input messages are deleted in batches within this many seconds
    # (worker/deletes.py); 0: each at once (`cloudkon run`).
    delete_batch_seconds: float = 0.0
    # Variables tasks get besides the base ones (cloudkon.taskenv); None: the worker's
    # whole environment (`cloudkon run`, the user's own shell).
    task_env: tuple[str, ...] | None = None
    # With a signing key: a bundle signed longer ago than this is refused (cloudkon/limits.py).
    replay_window_seconds: float = DEFAULT_REPLAY_WINDOW_SECONDS
    # A bundle that ran is completed (results stored, sent, message deleted) in the
    # background while its thread receives, claims and runs the next: on AWS those calls
    # take tens of ms between bundles. False: in the thread (`cloudkon run`: microseconds).
    complete_behind: bool = False

    def __post_init__(self) -> None:
        check_tail_bytes(self.tail_bytes)
        if self.task_env is not None:
            object.__setattr__(self, "task_env", check_names(self.task_env))

    @property
    def heartbeat_seconds(self) -> float:
        return self.visibility_seconds / HEARTBEATS_PER_VISIBILITY


@dataclass(frozen=True)
class SandboxConfig:
    """What `cloudkon sandbox` brings up on this machine."""

    prefix: str = DEFAULT_PREFIX
    workers: int = 2  # `cloudkon worker` processes
    threads: int = 4  # of each worker
    port: int = SANDBOX_PORT  # of the moto server on 127.0.0.1; 0: any free port
    host: str = "127.0.0.1"
    region: str = SANDBOX_REGION


# An SSM parameter name as a fleet's workers are given it: no character the shell of the
# user data would read.
_SSM_KEY = re.compile(r"ssm:[A-Za-z0-9_.\-/]{1,2048}")


@dataclass(frozen=True)
class FleetConfig:
    """What `cloudkon fleet up` makes: the group's size and bounds, its instances, and the
    provisioner's settings."""

    instances: int | None = None  # the desired count; None: keep it (on creation, the default)
    min_size: int = DEFAULT_FLEET_MIN
    max_size: int = DEFAULT_FLEET_MAX
    instance_type: str = DEFAULT_INSTANCE_TYPE
    spot: bool = False
    threads: int | None = None  # bundle threads per worker; None: one per vCPU
    subnets: tuple[str, ...] = ()  # empty: the default VPC's default subnets
    ami: str | None = None  # None: the latest Amazon Linux 2023
    tasks_per_worker: int = DEFAULT_TASKS_PER_WORKER
    signing_key: str | None = None  # "ssm:NAME" the workers read their signing key from

    def __post_init__(self) -> None:
        if self.signing_key is not None and not _SSM_KEY.fullmatch(self.signing_key):
            raise UsageError(f"--signing-key {self.signing_key!r}: a fleet's workers read"
                             " their key from SSM: ssm:NAME (letters, digits, '_.-/')")
        if self.min_size > self.max_size:
            raise UsageError(f"--min {self.min_size} is above --max {self.max_size}")
        if self.instances is not None and not self.min_size <= self.instances <= self.max_size:
            raise UsageError(f"--instances {self.instances} is outside --min {self.min_size}"
                             f" and --max {self.max_size}")
