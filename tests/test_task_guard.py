"""What a task may outlive and what it may see: a killed worker's tasks die with it (the
guardian), and a `cloudkon worker` task gets an environment from an allowlist, never the
worker's AWS settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import process_gone, wait_until
from test_worker_aws import FAST, Collector, ids_of, send

from cloudkon.guardian import serve
from cloudkon.model import Bundle, task_id
from cloudkon.taskenv import DEFAULT_PATH, task_environ


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def backgrounding(tmp_path: Path) -> str:
    """A task that writes its group id, starts a grandchild in the background that writes
    its pid, and waits: both live for minutes unless killed."""
    return (f"echo $$ > {tmp_path}/group; /bin/sleep 300 & echo $! > {tmp_path}/grandchild;"
            " wait")


def read_ids(tmp_path: Path) -> tuple[int, int] | None:
    try:
        return (int((tmp_path / "group").read_text()),
                int((tmp_path / "grandchild").read_text()))
    except (FileNotFoundError, ValueError):
        return None


# --- tasks die with their worker ------------------------------------------------------------

# The guardian learns of a task from the executor's thread just after the task started, once
# that thread has the GIL back: on a loaded machine, some tens of milliseconds in which a
# kill -9 of the worker would leave the task behind (SECURITY.md, docs/design.md section 9).
# These tests kill the worker after that gap, which is what they check the guardian for.
GUARDIAN_LAG_SECONDS = 1.0


def test_tasks_of_a_killed_worker_die_with_it(provisioned, sqs, start_worker, tmp_path):
    config = provisioned
    send(sqs, config, Bundle("orphans", 0, [(1, backgrounding(tmp_path))]))
    worker = start_worker(config, "--threads", 1, *FAST)
    group, grandchild = wait_until(lambda: read_ids(tmp_path), what="the task running")
    assert group_members(group)  # the shell and its grandchild run in the task's group
    time.sleep(GUARDIAN_LAG_SECONDS)
    worker.kill()  # SIGKILL: the worker can do nothing more
    wait_until(lambda: not group_members(group), timeout=20,
               what=f"no process of the task's group {group} left")
    assert process_gone(grandchild)


def test_tasks_of_a_killed_cloudkon_run_die_with_it(write_workload, start_cloudkon, tmp_path):
    workload = write_workload(backgrounding(tmp_path) + "\n")
    run = start_cloudkon("run", workload, "--no-progress", stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    group, _ = wait_until(lambda: read_ids(tmp_path), what="the task running")
    time.sleep(GUARDIAN_LAG_SECONDS)
    run.kill()
    run.wait()
    wait_until(lambda: not group_members(group), timeout=20,
               what=f"no process of the task's group {group} left")


def test_closed_executor_leaves_no_task_and_no_guardian(tmp_path):
    # An executor closed while its task runs (a program using it as a library): close()
    # ends the guardian, which kills the task's group on its way out.
    script = (
        "import sys, threading\n"
        "from cloudkon.executor import Executor\n"
        "e = Executor(None)\n"
        f"threading.Thread(target=e.run, args=('j', 1, {backgrounding(tmp_path)!r}),"
        " daemon=True).start()\n"
        "sys.stdin.read()\n"  # until the test closes it
        "print(e._guardian.pid, flush=True)\n"
        "e.close()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    group, _ = wait_until(lambda: read_ids(tmp_path), what="the task running")
    out, _ = proc.communicate("", timeout=30)
    assert proc.returncode == 0
    wait_until(lambda: process_gone(int(out)), timeout=15, what="the guardian gone")
    wait_until(lambda: not group_members(group), timeout=15, what="the task's group ended")


def test_guardian_forgets_ended_groups_and_ignores_what_is_not_a_registration():
    read, write = os.pipe()
    os.write(write, b"+ 101\n+ 102\n- 101\n+ -1\n+ 1\nhello\n+ 10")
    os.write(write, b"3\n")  # a line may arrive in pieces
    os.close(write)
    try:
        assert serve(read) == {102, 103}
    finally:
        os.close(read)


# --- scrubbed task environments -------------------------------------------------------------


def env_lines(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def test_worker_task_sees_only_allowed_variables_and_no_aws_settings(
        provisioned, sqs, start_worker, monkeypatch):
    config = provisioned
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKERSECRET")  # the worker's own
    monkeypatch.setenv("ALLOWED_SETTING", "passed")
    monkeypatch.setenv("OTHER_SETTING", "kept back")
    monkeypatch.setenv("LC_TIME", "C")
    bundle = Bundle("scrubbed", 0, [(1, "env")])
    send(sqs, config, bundle)
    start_worker(config, "--threads", 1, "--task-env", "ALLOWED_SETTING", *FAST)
    [result] = Collector(sqs, config).until(ids_of(bundle))[task_id("scrubbed", 1)]
    env = env_lines(result[7])
    assert not [name for name in env if name.startswith("AWS_")]
    assert "AKIAWORKERSECRET" not in result[7]
    assert env["ALLOWED_SETTING"] == "passed"
    assert "OTHER_SETTING" not in env
    assert env["LC_TIME"] == "C"
    assert env["CLOUDKON_TASK_ID"] == "scrubbed:1"
    assert env["CLOUDKON_JOB_ID"] == "scrubbed"
    assert env["PATH"]


def test_worker_refuses_to_pass_aws_variables(cloudkon, moto_server):
    proc = cloudkon("worker", "--task-env", "AWS_SECRET_ACCESS_KEY", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        ("cloudkon: error: --task-env AWS_SECRET_ACCESS_KEY: the worker's AWS settings and"
         " credentials are never passed to tasks")]


def test_worker_refuses_a_task_env_that_is_no_variable_name(cloudkon, moto_server):
    proc = cloudkon("worker", "--task-env", "A=B", timeout=60)
    assert proc.returncode == 2
    assert "--task-env 'A=B': not a variable name" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cloudkon_run_tasks_keep_the_users_environment(cloudkon, write_workload, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "mine")
    monkeypatch.setenv("MY_SETTING", "here")
    proc = cloudkon("run", write_workload("env\n"), "-o", "-", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    env = env_lines(json.loads(proc.stdout.splitlines()[0])["stdout"])
    assert (env["AWS_PROFILE"], env["MY_SETTING"]) == ("mine", "here")


def test_task_environ_without_path_gets_a_default_and_never_aws():
    env = task_environ(("AWS_REGION", "X"), {b"X": b"1", b"AWS_REGION": b"r", b"Y": b"2",
                                              b"LC_ALL": b"C", b"HOME": b"/h"})
    assert env == {b"X": b"1", b"LC_ALL": b"C", b"HOME": b"/h", b"PATH": DEFAULT_PATH}
    assert task_environ(None, {b"AWS_REGION": b"r"}) == {b"AWS_REGION": b"r"}


def test_worker_reads_task_env_names_from_cloudkon_task_env(cloudkon, moto_server):
    env = {**os.environ, "CLOUDKON_TASK_ENV": "HTTP_PROXY AWS_PROFILE"}
    proc = cloudkon("worker", env=env, timeout=60)
    assert proc.returncode == 2
    assert "--task-env AWS_PROFILE: the worker's AWS settings" in proc.stderr
