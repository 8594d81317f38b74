"""The executor: `sleep N` in-process, everything else with /bin/sh -c, each task's
outcome recorded, time limits and cancel ending the whole process tree."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import cloudkon.executor
from cloudkon.executor import Executor
from cloudkon.model import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, Result
from cloudkon.workload import sleep_ms


def run(command: str, timeout: float | None = None, tail_bytes: int = 4096,
        job_id: str = "job", line: int = 1) -> Result:
    return Result._make(Executor(timeout, tail_bytes).run(job_id, line, command))


def read_pid(path, wait_until) -> int:
    """The pid a task wrote to ``path`` (written to a temporary name, then moved)."""
    wait_until(path.exists, what=f"{path.name} written")
    return int(path.read_text())


# sleep N


def test_sleep_n_sleeps_at_least_n_milliseconds():
    started = time.monotonic()
    result = run("sleep 50")
    elapsed = time.monotonic() - started

    assert result.status == SUCCEEDED and result.exit_code == 0
    assert elapsed >= 0.05
    assert result.end - result.start >= 0.049  # wall clock, rounded by the OS


def test_sleep_longer_than_the_time_limit_times_out_at_the_limit():
    started = time.monotonic()
    result = run("sleep 600000", timeout=0.2)  # ten minutes asked, 0.2 s allowed

    assert result.status == TIMED_OUT
    assert result.exit_code is None
    assert time.monotonic() - started >= 0.2


# Shell commands: outcome and output


def test_shell_command_that_exits_0_succeeds():
    result = run("true")

    assert (result.status, result.exit_code, result.signal) == (SUCCEEDED, 0, None)


def test_shell_command_that_exits_nonzero_fails_with_its_exit_code():
    result = run("exit 3")

    assert (result.status, result.exit_code, result.signal) == (FAILED, 3, None)


def test_unknown_command_fails_with_exit_code_127():
    result = run("no-such-command-cloudkon-test")

    assert (result.status, result.exit_code) == (FAILED, 127)
    assert "not found" in result.stderr


def test_stdout_and_stderr_are_captured_separately():
    result = run("echo out; echo err >&2; echo more out")

    assert result.stdout == "out\nmore out\n"
    assert result.stderr == "err\n"


def test_output_keeps_only_its_tail_ending_with_the_last_bytes_printed():
    five_mb = "head -c 5000000 /dev/zero | tr '\\0' {}"
    command = (f"{five_mb.format('a')}; printf OUT-END; "
               f"({five_mb.format('b')}; printf ERR-END) >&2")

    result = run(command, tail_bytes=1000)

    assert result.status == SUCCEEDED
    assert result.stdout == "a" * 993 + "OUT-END"
    assert result.stderr == "b" * 993 + "ERR-END"


def test_task_killed_by_a_signal_records_the_signal_name():
    result = run("kill -TERM $$")

    assert result.status == FAILED
    assert result.signal == "SIGTERM"
    assert result.exit_code is None  # no exit status: the signal says what ended it


def test_task_environment_names_job_task_and_line():
    result = run('echo "$CLOUDKON_JOB_ID|$CLOUDKON_TASK_ID|$CLOUDKON_LINE"',
                 job_id="job-7", line=42)

    assert result.stdout == "job-7|job-7:42|42\n"


@pytest.mark.timeout(30)
def test_task_stdin_is_empty():
    result = run("cat; echo read-all")  # would wait forever on an open terminal or pipe

    assert result.status == SUCCEEDED
    assert result.stdout == "read-all\n"


# Time limits, background processes, cancel


@pytest.mark.parametrize("child", ["/bin/sleep 300", "(trap '' TERM; exec /bin/sleep 300)"],
                         ids=["plain", "ignoring-sigterm"])
def test_timeout_ends_the_task_and_every_process_it_started(tmp_path, wait_until, process_gone,
                                                            child):
    pid_file = tmp_path / "child.pid"
    command = (f"{child} & echo $! > {pid_file}.tmp && mv {pid_file}.tmp {pid_file};"
               " /bin/sleep 30; wait")

    result = run(command, timeout=1.0)

    assert result.status == TIMED_OUT
    pid = read_pid(pid_file, wait_until)
    try:
        wait_until(lambda: process_gone(pid), what="background child gone")
    finally:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_task_ignoring_sigterm_is_killed_after_the_grace_period():
    result = run("trap '' TERM; /bin/sleep 30", timeout=0.5)

    assert result.status == TIMED_OUT
    assert result.signal == "SIGKILL"


@pytest.mark.timeout(30)
def test_background_child_holding_stdout_open_does_not_hold_the_task(tmp_path, process_gone):
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()

    result = run(f"(/bin/sleep 30 & echo $! > {pid_file}); echo hi")

    try:
        assert time.monotonic() - started < 10  # anti-hang only: the child lives 30 s
        assert result.status == SUCCEEDED
        assert result.stdout == "hi\n"
    finally:
        child = int(pid_file.read_text())
        if not process_gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["/bin/sleep 30", "sleep 30000"],
                         ids=["shell", "in-process-sleep"])
def test_cancel_ends_a_running_task(tmp_path, wait_until, command):
    executor = Executor(None)
    marker = tmp_path / "started"
    results = []
    # The in-process sleep writes no marker: cancel() is checked the moment it starts.
    task = f"touch {marker}; {command}" if command.startswith("/") else command
    worker = threading.Thread(target=lambda: results.append(executor.run("job", 1, task)))
    worker.start()
    if command.startswith("/"):
        wait_until(marker.exists, what="task started")

    executor.cancel()
    worker.join(30)

    assert not worker.is_alive()
    assert Result._make(results[0]).status == CANCELLED


@pytest.mark.timeout(60)
def test_cancel_while_a_task_is_being_started_still_ends_it(monkeypatch):
    executor = Executor(None)
    real_spawn = cloudkon.executor._spawn

    def spawn_then_cancel(*args, **kwargs):
        started = real_spawn(*args, **kwargs)
        executor.cancel()  # lands after the task was started, before it is tracked
        return started

    monkeypatch.setattr(cloudkon.executor, "_spawn", spawn_then_cancel)
    started = time.monotonic()

    result = Result._make(executor.run("job", 1, "/bin/sleep 30"))

    assert result.status == CANCELLED
    assert time.monotonic() - started < 25  # anti-hang only: the task would run 30 s


def test_no_task_starts_after_cancel(tmp_path):
    executor = Executor(None)
    executor.cancel()

    results: list[tuple] = []
    ran_all = executor.run_bundle("job", [(1, f"touch {tmp_path}/a"), (2, f"touch {tmp_path}/b")],
                                  results, stop=lambda: False)

    assert (ran_all, results) == (False, [])
    assert list(tmp_path.iterdir()) == []


def test_run_bundle_stops_before_the_next_task_when_asked(tmp_path):
    executor = Executor(None)
    results: list[tuple] = []
    tasks = [(1, f"touch {tmp_path}/a"), (2, f"touch {tmp_path}/b")]

    ran_all = executor.run_bundle("job", tasks, results, stop=lambda: bool(results))

    assert ran_all is False
    assert [r[0] for r in results] == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_a_bundle_of_sleep_0_only_has_a_result_for_each_task_in_order():
    executor = Executor(None)
    for command in ("sleep 0", "sleep 0.0", "sleep 00"):
        sleep_ms(command)  # parsed, as the workload reader does
    tasks = [(n, ("sleep 0", "sleep 0.0", "sleep 00")[n % 3]) for n in range(1, 301)]

    out: list[tuple] = [("an earlier result",)]
    assert executor.run_bundle("job", tasks, out, stop=lambda: True)
    results = [Result._make(r) for r in out[1:]]

    assert [(r.line, r.command) for r in results] == tasks
    assert {(r.status, r.exit_code, r.stdout, r.stderr) for r in results} == {
        (SUCCEEDED, 0, "", "")}
    assert all(r.end >= r.start for r in results)
    assert [r.start for r in results] == sorted(r.start for r in results)


def test_run_bundle_runs_its_tasks_in_order():
    executor = Executor(None)

    out: list[tuple] = []
    assert executor.run_bundle("job", [(1, "sleep 0"), (2, "echo two"), (4, "exit 1"),
                                       (5, "sleep 1")], out, stop=lambda: False)
    results = [Result._make(r) for r in out]

    assert [r.line for r in results] == [1, 2, 4, 5]
    assert [r.status for r in results] == [SUCCEEDED, SUCCEEDED, FAILED, SUCCEEDED]
    assert results[1].stdout == "two\n"
    assert all(r.end >= r.start for r in results)
