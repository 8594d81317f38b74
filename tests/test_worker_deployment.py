"""What a worker says about its deployment: the resources it creates for a prefix that has
none (a new deployment, or a mistyped prefix), what `--no-create` refuses, and how it ends
when the deployment is torn down under it. `cloudkon worker` subprocesses on the moto
server, as a user runs them."""

from __future__ import annotations

import signal

from cloudkon.limits import QUEUE_GONE_EXIT_SECONDS

FAST = ("--wait-seconds", 1, "--liveness-seconds", 600, "--drain-seconds", 30)


def _warnings(log: str) -> list[str]:
    """The worker's warnings but the one of every worker without a signing key."""
    return [line for line in log.splitlines()
            if "cloudkon: warning:" in line and "no signing key configured" not in line]


def test_worker_on_a_new_prefix_warns_once_for_each_resource_it_creates(aws_config,
                                                                          start_worker,
                                                                          wait_until):
    worker = start_worker(aws_config, *FAST)
    wait_until(lambda: "serving queue" in worker.log, timeout=60, what="the worker serving")
    created = _warnings(worker.log)
    names = [aws_config.input_queue, aws_config.dead_letter_queue, aws_config.output_queue,
             aws_config.lease_table]
    assert len(created) == len(names), worker.log
    for line, name in zip(created, names):
        assert (f" {name} did not exist: created, as for a new deployment of prefix"
                f" '{aws_config.prefix}' (mistyped? --no-create refuses instead)") in line

    again = start_worker(aws_config, *FAST)  # the deployment exists now: nothing to say
    wait_until(lambda: "serving queue" in again.log, timeout=60, what="the second worker serving")
    assert _warnings(again.log) == []
    for w in (worker, again):
        w.signal(signal.SIGTERM)
        assert w.wait() == 0


def test_worker_with_no_create_on_a_mistyped_prefix_names_the_setup_command(aws_config,
                                                                             cloudkon):
    proc = cloudkon("worker", "--prefix", aws_config.prefix, "--no-create", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"cloudkon: error: queue {aws_config.input_queue}: it does not exist; is the prefix"
        f" '{aws_config.prefix}' right? To make its deployment, run `cloudkon setup --prefix"
        f" {aws_config.prefix}`\n")


def test_worker_whose_queues_are_torn_down_exits_2_after_a_bounded_time(provisioned,
                                                                         start_worker,
                                                                         wait_until, cloudkon):
    worker = start_worker(provisioned, "--threads", 2, *FAST)
    wait_until(lambda: "serving queue" in worker.log, timeout=60, what="the worker serving")
    gone = cloudkon("teardown", "--prefix", provisioned.prefix, "--bucket-suffix", "none")
    assert gone.returncode == 0, gone.stderr
    assert worker.wait(timeout=QUEUE_GONE_EXIT_SECONDS + 60) == 2
    log = worker.log
    assert log.count(f"receive from queue {provisioned.input_queue}: it does not exist") == 2, log
    warning = next(line for line in _warnings(log) if "does not exist" in line)
    assert warning.endswith(f"exiting in {QUEUE_GONE_EXIT_SECONDS:.0f} s unless it comes back")
    errors = [line for line in log.splitlines() if "cloudkon: error:" in line]
    assert len(errors) == 1, log
    assert errors[0].endswith(f"for {QUEUE_GONE_EXIT_SECONDS:.0f} s: exiting (was the deployment"
                              " torn down?)")
