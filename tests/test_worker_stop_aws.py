"""A worker stops at once (issue 13), for real: `cloudkon worker` processes against the moto
server. An idle worker exits within 2 s of SIGTERM, and a message that the receive in
flight at the stop brings is given back at once (visible to others right away), not left
invisible until its visibility timeout, after a drain and after a hard stop alike.
"""

from __future__ import annotations

import signal
import time

import pytest
from aws_fixtures import queue_url
from conftest import wait_until

from cloudkon.codec import encode_bundle
from cloudkon.model import Bundle

IDLE_EXIT_SECONDS = 2.0  # issue 13: from SIGTERM to the exit of an idle worker


def test_idle_worker_with_default_settings_exits_within_two_seconds_of_sigterm(
        provisioned, start_worker):
    worker = start_worker(provisioned)
    wait_until(lambda: "serving queue" in worker.log, what="the worker serving")
    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=30)
    took = time.monotonic() - signalled
    assert code == 0, worker.log
    assert took < IDLE_EXIT_SECONDS, f"exited {took:.2f} s after SIGTERM:\n{worker.log}"


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 0),
                                            (signal.SIGINT, 128 + signal.SIGINT)],
                         ids=["sigterm-drain", "sigint-hard-stop"])
def test_message_the_receive_in_flight_brings_after_the_stop_is_visible_again_at_once(
        provisioned, sqs, start_worker, tmp_path, stop, code):
    # A 20 s poll, so that it is surely still in flight when the message is sent; a 30 s
    # visibility timeout, which a message left in flight would stay hidden for.
    worker = start_worker(provisioned, "--threads", 1, "--wait-seconds", 20,
                          "--visibility-timeout", 30, "--liveness-seconds", 600)
    wait_until(lambda: "serving queue" in worker.log, what="the worker serving")
    worker.signal(stop)
    wait_until(lambda: "waiting for the receive in flight" in worker.log,
               what="the stop waiting for the receive in flight")
    ran = tmp_path / "ran"
    url = queue_url(sqs, provisioned.input_queue)
    body = encode_bundle(Bundle("late", 0, [(1, f"touch {ran}")]), provisioned.output_queue)
    sent = sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]
    assert worker.wait(timeout=30) == code, worker.log
    assert f"gave back message {sent}" in worker.log
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0, VisibilityTimeout=30,
                              MessageSystemAttributeNames=["ApproximateReceiveCount"]
                              ).get("Messages", [])
    assert [m["MessageId"] for m in got] == [sent]  # right away, not 30 s later
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "2"  # the worker's, and this
    assert not ran.exists()  # received after the stop: never started
