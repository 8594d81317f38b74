"""How many workers the fleet should have: one pure function of the backlog and the
provisioner's state, so that a scripted backlog can test it (docs/design.md, provisioning).

The rule:

- the backlog is the input queue's messages, visible and in flight, times the tasks a
  bundle is assumed to hold; the target is one worker per ``tasks_per_worker`` of it,
  within ``min_size`` and ``max_size``;
- above the current count, the fleet grows to the target at once, unless its last change
  was a shrink less than ``cooldown_seconds`` ago (an empty fleet always grows at once);
- it never shrinks while there is a backlog, so a scale-in does not meet a busy worker: it
  goes down to ``min_size`` once the queue has been empty (nothing visible, nothing in
  flight) for ``idle_seconds`` and the last change is ``cooldown_seconds`` old;
- a count outside the bounds is brought inside them at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cloudkon.limits import (
    DEFAULT_SCALE_COOLDOWN_SECONDS,
    DEFAULT_SCALE_IDLE_SECONDS,
    DEFAULT_TASKS_PER_BUNDLE,
    DEFAULT_TASKS_PER_WORKER,
)

OUT, IN = 1, -1  # directions of a change


@dataclass(frozen=True)
class ScalingPolicy:
    """The provisioner's settings, as `fleet up` records them."""

    min_size: int
    max_size: int
    tasks_per_bundle: float = DEFAULT_TASKS_PER_BUNDLE
    tasks_per_worker: float = DEFAULT_TASKS_PER_WORKER
    cooldown_seconds: float = DEFAULT_SCALE_COOLDOWN_SECONDS
    idle_seconds: float = DEFAULT_SCALE_IDLE_SECONDS


@dataclass(frozen=True)
class ScalingState:
    """What the provisioner remembers between decisions (seconds since the epoch; 0: never)."""

    last_change: float = 0.0  # when it last changed the desired count
    last_direction: int = 0  # OUT or IN: which way that change went
    last_busy: float = 0.0  # when it last saw a backlog


@dataclass(frozen=True)
class Decision:
    """The count to set, why, and the state to keep for the next decision."""

    current: int
    desired: int
    reason: str
    state: ScalingState

    @property
    def changes(self) -> bool:
        return self.desired != self.current


def decide(policy: ScalingPolicy, visible: int, in_flight: int, current: int,
           state: ScalingState, now: float) -> Decision:
    """The fleet's desired count for a backlog of ``visible`` + ``in_flight`` messages when
    it has ``current`` (see the module's docstring for the rule)."""
    tasks = (visible + in_flight) * policy.tasks_per_bundle
    target = _bounded(math.ceil(tasks / policy.tasks_per_worker), policy)
    if tasks > 0:
        state = replace(state, last_busy=now)
    backlog = (f"backlog {visible + in_flight:,} bundles ({visible:,} waiting, {in_flight:,}"
               f" running), about {tasks:,.0f} tasks")

    def change(desired: int, why: str) -> Decision:
        direction = OUT if desired > current else IN
        return Decision(current, desired, why,
                        replace(state, last_change=now, last_direction=direction))

    def hold(why: str) -> Decision:
        return Decision(current, current, why, state)

    if current != _bounded(current, policy):
        return change(max(_bounded(current, policy), target) if tasks > 0
                      else _bounded(current, policy),
                      f"{current} is outside min {policy.min_size} and max {policy.max_size}")
    since_change = now - state.last_change
    cooling = since_change < policy.cooldown_seconds
    if target > current:
        if cooling and state.last_direction == IN and current > 0:
            return hold(f"{backlog}: {target} wanted, but the fleet shrank {since_change:.0f} s"
                        f" ago (cool-down {policy.cooldown_seconds:.0f} s)")
        return change(target, f"{backlog}: {target} workers at {policy.tasks_per_worker:,.0f}"
                              " tasks each")
    if target == current or tasks > 0:
        return hold(f"{backlog}: {current} workers are enough (no scale-in while there is work)"
                    if tasks > 0 else f"idle at {current} workers")
    idle = now - state.last_busy if state.last_busy else math.inf
    if idle < policy.idle_seconds:
        return hold(f"idle for {idle:.0f} s: down to {policy.min_size} after"
                    f" {policy.idle_seconds:.0f} s")
    if cooling:
        return hold(f"idle, but the fleet changed {since_change:.0f} s ago (cool-down"
                    f" {policy.cooldown_seconds:.0f} s)")
    idle_text = "ever since it was first seen" if math.isinf(idle) else f"for {idle:.0f} s"
    return change(target, f"idle {idle_text}: down to the minimum, {target}")


def _bounded(count: int, policy: ScalingPolicy) -> int:
    return max(policy.min_size, min(policy.max_size, count))
