"""The worker's metrics as CloudWatch Embedded Metric Format (EMF) lines in its log.

Each bundle a worker completes or replays becomes one JSON line whose ``_aws`` member
tells CloudWatch Logs which fields are metrics; shipped by the CloudWatch agent
(deploy/cloudwatch-agent.json), the lines become metrics of the namespace ``CloudKon`` with
the dimension ``Queue`` (the deployment's input queue), with no code of ours calling
CloudWatch. The other fields (job, bundle, worker) stay in the log for Logs Insights.
Specification: docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol

from cloudkon.model import FAILED, SUCCEEDED, TIMED_OUT, Bundle

NAMESPACE = "CloudKon"
DIMENSION = "Queue"

# Metric name -> unit, in the order they appear in a line.
BUNDLE_METRICS = {
    "TasksCompleted": "Count",  # tasks that ran to an end, whatever their status
    "TasksSucceeded": "Count",
    "TasksFailed": "Count",
    "TasksTimedOut": "Count",
    "BundleDuration": "Milliseconds",  # claim to completion
    "QueueWait": "Milliseconds",  # from the bundle's send to its claim
}
REPLAY_METRICS = {"BundlesReplayed": "Count"}


class BundleMetrics(Protocol):
    """Where the worker reports each bundle it is done with."""

    def completed(self, bundle: Bundle, results: list[tuple], seconds: float,
                  queue_wait: float | None) -> None:
        """A bundle ran and its results were sent: ``results`` are result tuples,
        ``seconds`` from claim to completion, ``queue_wait`` from send to claim (None if the
        bundle carries no send time)."""

    def replayed(self, bundle: Bundle) -> None:
        """A bundle found COMPLETED was replayed: its stored results sent again, nothing run."""


class EmfMetrics:
    """Writes each report as one EMF line through ``write`` (a log line, without newline)."""

    def __init__(self, write: Callable[[str], None], queue: str, worker_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.write = write
        self.queue = queue
        self.worker_id = worker_id
        self.clock = clock

    def completed(self, bundle: Bundle, results: list[tuple], seconds: float,
                  queue_wait: float | None) -> None:
        statuses = [r[2] for r in results]
        values = {
            "TasksCompleted": len(results),
            "TasksSucceeded": statuses.count(SUCCEEDED),
            "TasksFailed": statuses.count(FAILED),
            "TasksTimedOut": statuses.count(TIMED_OUT),
            "BundleDuration": round(seconds * 1000, 3),
        }
        if queue_wait is not None:
            values["QueueWait"] = round(max(queue_wait, 0.0) * 1000, 3)
        self.write(self.line(values, {k: BUNDLE_METRICS[k] for k in values}, bundle))

    def replayed(self, bundle: Bundle) -> None:
        self.write(self.line({"BundlesReplayed": 1}, REPLAY_METRICS, bundle))

    def line(self, values: dict[str, float], units: dict[str, str], bundle: Bundle) -> str:
        """One EMF document: the metadata, the dimension, the values, and the ids."""
        doc = {
            "_aws": {
                "Timestamp": int(self.clock() * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit in units.items()],
                }],
            },
            DIMENSION: self.queue,
            **values,
            "job_id": bundle.job_id,
            "bundle": bundle.seq,
            "worker": self.worker_id,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
