"""The provisioner's rule (fleet/capacity.py) on scripted backlogs: out under load, in
when idle, never below min or above max, no flapping within the cool-down."""

from __future__ import annotations

from fleet.capacity import IN, OUT, ScalingPolicy, ScalingState, decide

T0 = 1_800_000_000.0  # seconds since the epoch when the scripts start
POLICY = ScalingPolicy(min_size=1, max_size=8, tasks_per_bundle=100, tasks_per_worker=1000,
                       cooldown_seconds=300, idle_seconds=600)


def run(script, policy=POLICY, current=1, state=None):
    """Decide once a minute on each (visible, in flight) of ``script``, applying each
    decision as the group would; return [(minute, desired, reason)]."""
    seen = []
    state = state or ScalingState()
    for minute, (visible, in_flight) in enumerate(script):
        decision = decide(policy, visible, in_flight, current, state, now=T0 + minute * 60.0)
        current, state = decision.desired, decision.state
        seen.append((minute, current, decision.reason))
    return seen


def counts(seen):
    return [c for _, c, _ in seen]


def test_grows_to_the_backlog_at_once_and_keeps_growing_while_it_rises():
    seen = run([(0, 0), (25, 0), (45, 5), (60, 10)])
    # 25 bundles x 100 tasks / 1000 per worker = 3 (rounded up); then 5, then 7.
    assert counts(seen) == [1, 3, 5, 7]
    assert "backlog 25 bundles" in seen[1][2]


def test_never_above_max_nor_below_min():
    seen = run([(0, 0), (10_000, 0), (10_000, 40)] + [(0, 0)] * 30)
    assert max(counts(seen)) == POLICY.max_size
    assert min(counts(seen)) == POLICY.min_size
    assert counts(seen)[1] == POLICY.max_size


def test_no_scale_in_while_there_is_work():
    seen = run([(80, 0)] + [(0, 8)] * 20)  # the backlog is all in flight: workers are busy
    assert counts(seen) == [8] * 21
    assert "no scale-in while there is work" in seen[-1][2]


def test_down_to_min_after_the_idle_period():
    seen = run([(80, 0)] + [(0, 0)] * 15)
    # Busy at minute 0; idle from minute 1; 600 s of idleness is reached at minute 10.
    assert counts(seen) == [8] * 10 + [1] * 6
    assert seen[10][2].startswith("idle for 600 s")
    assert "down to 1 after 600 s" in seen[5][2]


def test_no_flapping_within_the_cool_down():
    # A burst, five idle minutes, then another burst: with a 60 s idle period the fleet
    # could shrink at minute 1 and grow back at minute 6; the cool-down spaces each change
    # of direction 300 s from the change before.
    policy = ScalingPolicy(1, 8, 100, 1000, cooldown_seconds=300, idle_seconds=60)
    seen = run([(80, 0)] + [(0, 0)] * 5 + [(40, 0)] * 5, policy=policy)
    assert counts(seen) == [8, 8, 8, 8, 8, 1, 1, 1, 1, 1, 4]
    assert "cool-down 300 s" in seen[1][2] and "cool-down 300 s" in seen[6][2]
    changes = [m for m, c, _ in seen if c != ([1] + counts(seen))[m]]
    assert changes == [0, 5, 10]


def test_a_reversal_waits_for_the_cool_down():
    policy = ScalingPolicy(1, 8, 100, 1000, cooldown_seconds=300, idle_seconds=0)
    # Shrunk to 2 at t=0 (a scale-in); a backlog asking for 5 arrives at t=120.
    state = ScalingState(last_change=T0, last_direction=IN, last_busy=T0)
    held = decide(policy, 50, 0, 2, state, now=T0 + 120)
    assert held.desired == 2 and "cool-down 300 s" in held.reason
    grown = decide(policy, 50, 0, 2, held.state, now=T0 + 300)
    assert grown.desired == 5 and grown.state.last_direction == OUT


def test_an_empty_fleet_grows_at_once_even_within_the_cool_down():
    policy = ScalingPolicy(0, 8, 100, 1000, cooldown_seconds=300, idle_seconds=600)
    state = ScalingState(last_change=T0, last_direction=IN, last_busy=T0)
    assert decide(policy, 1, 0, 0, state, now=T0 + 30).desired == 1


def test_a_new_fleet_is_not_shrunk_before_its_idle_period():
    state = ScalingState(last_change=T0, last_busy=T0)  # as fleet up records it
    assert decide(POLICY, 0, 0, 4, state, now=T0 + 599).desired == 4
    assert decide(POLICY, 0, 0, 4, state, now=T0 + 600).desired == 1


def test_a_provisioner_that_never_saw_work_shrinks_an_idle_fleet():
    assert decide(POLICY, 0, 0, 4, ScalingState(), now=T0).desired == 1


def test_a_count_outside_the_bounds_is_brought_inside_at_once():
    state = ScalingState(last_change=T0, last_direction=OUT, last_busy=T0)
    assert decide(POLICY, 0, 0, 12, state, now=T0 + 10).desired == 8
    assert decide(POLICY, 0, 0, 0, state, now=T0 + 10).desired == 1
    assert decide(POLICY, 500, 0, 0, state, now=T0 + 10).desired == 8
