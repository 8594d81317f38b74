"""`cloudkon run` end to end, as a user meets it: a real process, its exit code, what it
prints, the results file, Ctrl-C and SIGTERM, the progress bar."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

DEADLINE_SECONDS = 30  # generous: only there to end a hang
RECORD_FIELDS = {"task_id", "line", "command", "status", "exit_code", "signal", "start", "end",
                 "duration", "stdout", "stderr", "worker", "queued"}


def records(path) -> dict[int, dict]:
    """The results file as records by line number."""
    with open(path, encoding="utf-8") as f:
        return {rec["line"]: rec for rec in map(json.loads, f)}


# The command itself


def test_bare_cloudkon_prints_its_help_on_stdout_and_exits_0(cloudkon):
    proc = cloudkon()

    assert proc.returncode == 0
    assert proc.stderr == ""
    assert proc.stdout.startswith("Usage: cloudkon")
    assert "error" not in proc.stdout
    assert proc.stdout == cloudkon("--help").stdout  # the same help, whole


def test_unknown_command_is_a_one_line_usage_error(cloudkon):
    proc = cloudkon("rnu")

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("cloudkon: error: No such command 'rnu'")
    assert "Did you mean 'run'?" in proc.stderr


# Exit codes and the summary


def test_every_task_succeeding_exits_0(cloudkon, write_workload):
    path = write_workload("sleep 5\necho hello\n# done\ntrue\n")

    proc = cloudkon("run", path, "--workers", "2")

    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize(("task", "options", "shown_as"), [
    ("exit 3", [], r"failed: line 2 \(exit 3\): exit 3"),
    ("kill -KILL $$", [], r"failed: line 2 \(SIGKILL\): kill -KILL \$\$"),
    ("/bin/sleep 30", ["--task-timeout", "0.5"],
     r"timed out: line 2 \(after (0\.[5-9]|[1-9]\.\d)\d s, SIGTERM\): /bin/sleep 30"),
    ("sleep 5000", ["--task-timeout", "0.5"], r"timed out: line 2 \(after (0\.[5-9]|[1-9]\.\d)\d s\): sleep 5000"),
])
def test_failed_or_timed_out_task_exits_1_and_the_summary_says_how_its_line_ended(
        cloudkon, write_workload, task, options, shown_as):
    path = write_workload(f"echo first\n{task}\nsleep 1\n")

    proc = cloudkon("run", path, "--workers", "2", *options)

    assert proc.returncode == 1, proc.stderr
    assert re.fullmatch(f"  {shown_as}", proc.stdout.splitlines()[-1]), proc.stdout


def test_failed_lines_are_listed_in_line_order_not_as_they_finish(cloudkon, write_workload):
    # Line 1 fails last, line 12 first: the first ten lines are listed, in order.
    lines = [f"/bin/sleep 0.{12 - n:02d}; exit {n}" for n in range(1, 13)]
    path = write_workload("\n".join(lines) + "\n")

    proc = cloudkon("run", path, "--workers", "12")

    assert proc.returncode == 1, proc.stderr
    listed = [line for line in proc.stdout.splitlines() if "failed: line" in line]
    assert listed == [f"  failed: line {n} (exit {n}): {lines[n - 1]}" for n in range(1, 11)]
    assert proc.stdout.splitlines()[-1] == "  ... and 2 more failed or timed out (see --output)"


def test_efficiency_of_sleeps_cut_by_the_time_limit_is_not_above_100_percent(
        cloudkon, write_workload):
    proc = cloudkon("run", write_workload("sleep 5000\n"), "--workers", "1",
                    "--task-timeout", "1", "--json")

    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["timed_out"] == 1
    assert 0.5 < summary["efficiency"] <= 1.0


def test_task_timeout_makes_a_long_task_timed_out(cloudkon, write_workload, tmp_path):
    path = write_workload("/bin/sleep 30\necho quick\n")
    out = tmp_path / "results.jsonl"

    proc = cloudkon("run", path, "--task-timeout", "0.5", "--output", out, "--json")

    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["timed_out"] == 1
    by_line = records(out)
    assert by_line[1]["status"] == "timed_out"
    assert by_line[2]["status"] == "succeeded"


# Bad input: one line, exit 2, no traceback


def _binary() -> bytes:
    return bytes(range(256)) * 16


@pytest.mark.parametrize(("setup", "args", "names_the_path"), [
    pytest.param(None, ["missing.txt"], True, id="missing-file"),
    pytest.param("mkdir", ["jobs"], True, id="directory"),
    pytest.param(b"", ["w.txt"], True, id="empty-file"),
    pytest.param(b"# only\n\n# comments\n", ["w.txt"], True, id="comments-only"),
    pytest.param(_binary(), ["w.txt"], True, id="binary-file"),
    pytest.param(b"sleep 0\n", ["w.txt", "--workers", "0"], False, id="workers-0"),
    pytest.param(b"sleep 0\n", ["w.txt", "--workers", "-3"], False, id="workers-negative"),
    pytest.param(b"sleep 0\n", ["w.txt", "--no-such-option"], False, id="unknown-option"),
    pytest.param(b"sleep 0\n", ["w.txt", "--output", "no/such/folder/r.jsonl"], False,
                 id="missing-output-folder"),
    pytest.param("mkfifo", ["pipe"], True, id="fifo"),
    pytest.param(b"sleep 0\n", ["w.txt", "--task-timeout", "nan"], False, id="timeout-nan"),
    pytest.param(b"sleep 0\n", ["w.txt", "--job-id", "a b/c"], False, id="job-id-unusable"),
])
def test_bad_input_exits_2_with_one_error_line_and_no_traceback(
        cloudkon, write_workload, tmp_path, setup, args, names_the_path):
    if setup == "mkdir":
        (tmp_path / args[0]).mkdir()
    elif setup == "mkfifo":  # no writer: opening it would block, so it must be refused first
        os.mkfifo(tmp_path / args[0])
    elif setup is not None:
        write_workload(setup, name="w.txt")

    proc = cloudkon("run", *args)

    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("cloudkon: error:")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    if names_the_path:
        assert args[0] in proc.stderr


# The workload from stdin: `cloudkon run -`


def test_dash_reads_the_workload_from_stdin(cloudkon, tmp_path):
    out = tmp_path / "results.jsonl"
    spool = tmp_path / "tmp"
    spool.mkdir()

    proc = cloudkon("run", "-", "--output", out, "--job-id", "piped", input="echo a\n# b\nexit 3\n",
                    env={**os.environ, "TMPDIR": str(spool)})

    assert proc.returncode == 1, proc.stderr
    assert "  failed: line 3 (exit 3): exit 3" in proc.stdout.splitlines()
    by_line = records(out)
    assert sorted(by_line) == [1, 3] and by_line[1]["stdout"] == "a\n"
    assert by_line[3]["task_id"] == "piped:3"
    assert list(spool.iterdir()) == []  # stdin's copy is gone


def test_dash_names_bad_lines_of_stdin_by_number(cloudkon):
    proc = cloudkon("run", "-", input=b"echo a\necho caf\xe9\n")

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "cloudkon: warning: <stdin>:2: is not valid UTF-8 (byte 9); line skipped"]


def test_dash_with_strict_checks_stdin_before_running_anything(cloudkon, tmp_path):
    made = tmp_path / "made"

    proc = cloudkon("run", "-", "--strict", input=f"touch {made}\nsleep 1s\n")

    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "cloudkon: error: <stdin>: 1 bad line; nothing was run (--strict)")
    assert "<stdin>:2:" in proc.stderr
    assert not made.exists()


@pytest.mark.parametrize(("stdin", "says"), [
    pytest.param(b"", "<stdin>: is empty", id="empty"),
    pytest.param(_binary(), "<stdin>: is not a text workload", id="binary"),
])
def test_dash_refuses_stdin_that_is_no_workload(cloudkon, stdin, says):
    proc = cloudkon("run", "-", input=stdin)

    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"cloudkon: error: {says}")
    assert proc.stdout == ""


def test_an_executable_is_refused_whole_as_binary(cloudkon):
    elf = os.path.realpath(sys.executable)  # the Python interpreter: an ELF file

    proc = cloudkon("run", elf)

    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        (f"cloudkon: error: {elf}: is not a text workload (binary data); a workload is UTF-8"
         " text, one task per line")]


def test_results_on_stdout_piped_into_head_end_the_run_quietly(write_workload, tmp_path):
    path = write_workload("sleep 5\n" * 2000)  # long enough to still run when head exits

    proc = subprocess.run(
        f"{sys.executable} -m cloudkon run {path} --workers 4 --output - | head -n 1",
        shell=True, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        executable="/bin/bash")

    assert json.loads(proc.stdout)["status"] == "succeeded"
    assert proc.stderr == ""  # no "Broken pipe", no traceback


def test_comments_only_file_exits_2_under_strict_too(cloudkon, write_workload):
    path = write_workload("# nothing to do\n")

    proc = cloudkon("run", path, "--strict")

    assert proc.returncode == 2
    assert proc.stderr.startswith("cloudkon: error:") and len(proc.stderr.splitlines()) == 1


def _with_bad_middle_line(tmp_path, write_workload):
    made = [tmp_path / f"made-{n}" for n in (1, 2, 3, 4)]
    content = (f"touch {made[0]}\ntouch {made[1]}\n".encode() + b"echo caf\xe9\n"
               + f"touch {made[2]}\ntouch {made[3]}\n".encode())
    return write_workload(content), made


def test_a_nul_line_and_an_over_long_line_are_skipped_each_and_the_rest_runs(
        cloudkon, write_workload, tmp_path):
    made = tmp_path / "made"
    path = write_workload(b"echo \x00\n" + b"echo " + b"x" * 140_000 + b"\n"
                          + f"touch {made}\n".encode())

    proc = cloudkon("run", path)

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"cloudkon: warning: {path}:1: contains a NUL byte; line skipped",
        f"cloudkon: warning: {path}:2: longer than 131071 bytes; line skipped",
    ]
    assert made.exists()


def test_bad_line_is_reported_with_file_and_line_and_the_rest_runs(
        cloudkon, write_workload, tmp_path):
    path, made = _with_bad_middle_line(tmp_path, write_workload)

    proc = cloudkon("run", path, "--workers", "2")

    assert proc.returncode == 1
    assert f"{path}:3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(p.exists() for p in made)


def test_bad_line_with_strict_exits_2_and_runs_nothing(cloudkon, write_workload, tmp_path):
    path, made = _with_bad_middle_line(tmp_path, write_workload)

    proc = cloudkon("run", path, "--workers", "2", "--strict")

    assert proc.returncode == 2
    *named, last = proc.stderr.splitlines()
    assert named == [f"cloudkon: warning: {path}:3: is not valid UTF-8 (byte 9)"]  # not "skipped"
    assert last == f"cloudkon: error: {path}: 1 bad line; nothing was run (--strict)"
    assert not any(p.exists() for p in made)


def test_negative_sleep_is_named_as_such(cloudkon, write_workload):
    path = write_workload("sleep 5\nsleep -1\n")

    proc = cloudkon("run", path)

    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        (f"cloudkon: warning: {path}:2: 'sleep -1': a negative number of milliseconds;"
         " 'sleep N' takes N >= 0; line skipped")]


# What a run writes


def test_output_writes_one_record_per_task_with_ids_from_the_job_id(
        cloudkon, write_workload, tmp_path):
    path = write_workload("# results\necho out; echo err >&2\nexit 4\nsleep 5\nkill -KILL $$\n")
    out = tmp_path / "results.jsonl"

    proc = cloudkon("run", path, "--job-id", "nightly", "--output", out, "--workers", "2")

    assert proc.returncode == 1, proc.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    by_line = records(out)
    assert sorted(by_line) == [2, 3, 4, 5]
    for n, rec in by_line.items():
        assert RECORD_FIELDS <= set(rec)
        assert rec["task_id"] == f"nightly:{n}"
        assert rec["end"] >= rec["start"] and rec["duration"] >= 0
        assert 0 < rec["queued"] <= rec["start"]
        assert rec["worker"]
    assert by_line[2]["command"] == "echo out; echo err >&2"
    assert (by_line[2]["status"], by_line[2]["exit_code"]) == ("succeeded", 0)
    assert (by_line[2]["stdout"], by_line[2]["stderr"]) == ("out\n", "err\n")
    assert (by_line[3]["status"], by_line[3]["exit_code"]) == ("failed", 4)
    assert by_line[4]["status"] == "succeeded" and by_line[4]["duration"] >= 0.004
    assert (by_line[5]["status"], by_line[5]["signal"]) == ("failed", "SIGKILL")


def test_task_ids_are_the_same_when_the_same_workload_runs_again(
        cloudkon, write_workload, tmp_path):
    path = write_workload("echo a\n# b\nsleep 3\n\necho c\n")
    ids = []
    for attempt in (1, 2):
        out = tmp_path / f"results-{attempt}.jsonl"
        assert cloudkon("run", path, "--job-id", "retry", "--output", out).returncode == 0
        ids.append({rec["task_id"]: rec["command"] for rec in records(out).values()})

    assert ids[0] == ids[1] == {"retry:1": "echo a", "retry:3": "sleep 3", "retry:5": "echo c"}


def test_json_prints_the_summary_as_one_object(cloudkon, write_workload):
    path = write_workload("sleep 20\n" * 8)

    proc = cloudkon("run", path, "--json", "--workers", "4")

    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout is one object
    assert (summary["tasks"], summary["succeeded"], summary["failed"],
            summary["timed_out"]) == (8, 8, 0, 0)
    assert summary["wall_seconds"] > 0
    assert summary["tasks_per_second"] > 0
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99"}
    assert summary["latency_ms"]["p50"] >= 20
    assert 0 < summary["efficiency"] <= 1


def test_json_efficiency_is_null_for_shell_tasks(cloudkon, write_workload):
    proc = cloudkon("run", write_workload("true\nsleep 10\n"), "--json")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["efficiency"] is None


def test_100000_tasks_all_run_once(cloudkon, write_workload, tmp_path):
    lines = [("true" if n % 500 == 0 else "sleep 0") for n in range(1, 100_001)]  # 200 shell
    path = write_workload("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"

    proc = cloudkon("run", path, "--workers", "4", "--output", out, "--json",
                    "--job-id", "big")

    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tasks"] == summary["succeeded"] == 100_000
    ids = set()
    with open(out, encoding="utf-8") as f:
        for rec in map(json.loads, f):
            assert rec["status"] == "succeeded"
            ids.add(rec["task_id"])
    assert ids == {f"big:{n}" for n in range(1, 100_001)}


def test_quick_tasks_one_per_bundle_each_have_one_result(cloudkon, write_workload, tmp_path):
    # Bundles quicker than the client's wake-up: it keeps more of them in flight.
    path = write_workload("sleep 0\n" * 3000)
    out = tmp_path / "results.jsonl"

    proc = cloudkon("run", path, "--workers", "2", "--bundle-size", "1", "--output", out,
                    "--json", "--job-id", "quick")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["succeeded"] == 3000
    with open(out, encoding="utf-8") as f:
        ids = sorted(json.loads(line)["line"] for line in f)
    assert ids == list(range(1, 3001))


# Ctrl-C and SIGTERM


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_prints_an_interrupted_summary_and_ends_every_task(
        start_cloudkon, write_workload, tmp_path, wait_until, process_gone, sig, code):
    pids = tmp_path / "pids"
    pids.mkdir()
    # Each task records the pid of its `sleep` (written whole, then renamed) and waits on it.
    task = (f"/bin/sleep 30 & echo $! > {pids}/$CLOUDKON_LINE.tmp"
            f" && mv {pids}/$CLOUDKON_LINE.tmp {pids}/$CLOUDKON_LINE; wait")
    path = write_workload(f"{task}\n" * 20)
    proc = start_cloudkon("run", path, "--workers", "4", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(list(pids.glob("[0-9]*"))) >= 4, what="4 tasks running")

    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=DEADLINE_SECONDS)

    assert proc.returncode == code
    assert "interrupted" in stdout
    started = [int(p.read_text()) for p in pids.glob("[0-9]*")]
    assert len(started) < 20  # the run stopped: not every task started
    for pid in started:
        wait_until(lambda pid=pid: process_gone(pid), what=f"task process {pid} gone")


def test_an_interrupted_run_counts_the_tasks_it_never_read(
        start_cloudkon, write_workload, tmp_path, wait_until):
    pids = tmp_path / "pids"
    pids.mkdir()
    task = (f"/bin/sleep 30 & echo $! > {pids}/$CLOUDKON_LINE.tmp"
            f" && mv {pids}/$CLOUDKON_LINE.tmp {pids}/$CLOUDKON_LINE; wait")
    # 2,000 tasks, with comments and blank lines between them that are no tasks.
    path = write_workload(f"{task}\n# a comment\n\n" * 2000)
    proc = start_cloudkon("run", path, "--workers", "2", "--json", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(list(pids.glob("[0-9]*"))) >= 2, what="2 tasks running")

    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=DEADLINE_SECONDS)

    assert proc.returncode == 130
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    assert summary["tasks"] == 2000 and summary["not_read_at_least"] is False
    assert summary["not_read"] > 1000  # the run read a few bundles ahead, no more
    assert (summary["succeeded"] + summary["failed"] + summary["timed_out"]
            + summary["cancelled"] + summary["not_run"] + summary["not_read"]) == 2000


def test_an_interrupted_run_says_how_many_tasks_it_never_read(
        start_cloudkon, write_workload, tmp_path, wait_until):
    marker = tmp_path / "started"
    path = write_workload(f"touch {marker}; /bin/sleep 30\n" + "echo later\n" * 500)
    proc = start_cloudkon("run", path, "--workers", "1", stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wait_until(marker.exists, what="the first task running")

    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=DEADLINE_SECONDS)

    assert proc.returncode == 130
    lines = stdout.splitlines()
    assert lines[1].split()[:2] == ["tasks", "501"]
    # The task ended by Ctrl-C and the few read ahead did not finish; the rest was not read.
    counted = re.fullmatch(r" +not finished (\d+)  not read (\d+)", lines[2])
    assert counted, lines
    assert int(counted[1]) + int(counted[2]) == 501 and int(counted[2]) > 400


# The progress bar


def test_progress_bar_shows_on_a_terminal_with_the_total(start_cloudkon, write_workload):
    path = write_workload("sleep 1\n" * 37)
    master, slave = pty.openpty()
    # A terminal has a size; a fresh pseudo-terminal reports 0x0, where tqdm draws nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = start_cloudkon("run", path, "--workers", "2", stdout=subprocess.DEVNULL,
                              stderr=slave)
        os.close(slave)
        shown = _read_until_closed(master, proc)
    finally:
        os.close(master)

    assert proc.wait(DEADLINE_SECONDS) == 0
    assert "37/37" in shown


def _read_until_closed(fd: int, proc: subprocess.Popen) -> str:
    """Everything written to a pseudo-terminal until the other side has closed it."""
    chunks = []
    deadline = time.monotonic() + DEADLINE_SECONDS * 2
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # every slave end closed
                break
            raise
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def test_no_progress_output_when_stderr_is_a_pipe(cloudkon, write_workload):
    proc = cloudkon("run", write_workload("sleep 1\n" * 37), "--workers", "2")

    assert proc.returncode == 0
    assert proc.stderr == ""


def test_run_resume_runs_only_the_lines_without_a_result_and_appends(cloudkon, write_workload,
                                                                    tmp_path):
    ran = tmp_path / "ran"
    workload = write_workload("".join(f"echo {n} >> {ran}\n" for n in range(1, 6)))
    out = tmp_path / "results.jsonl"
    first = cloudkon("run", workload, "-w", 2, "-o", out)
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    job_id = records[0]["job_id"]
    kept = [r for r in records if r["line"] in (1, 3, 4)]
    cancelled = dict(next(r for r in records if r["line"] == 5), status="cancelled")
    out.write_text("".join(json.dumps(r) + "\n" for r in kept + [cancelled]))
    ran.unlink()
    resumed = cloudkon("run", workload, "-w", 2, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(ran.read_text().split()) == ["2", "5"]  # a cancelled task is no result
    after = [json.loads(line) for line in out.read_text().splitlines()]
    assert after[:4] == kept + [cancelled]  # kept as it was, appended to
    assert sorted(r["line"] for r in after[4:]) == [2, 5]
    assert {r["job_id"] for r in after} == {job_id}
    assert "tasks               5   succeeded 5" in resumed.stdout
    bad = write_workload("not json\n", name="bad.jsonl")
    refused = cloudkon("run", workload, "--resume", bad)
    assert (refused.returncode, refused.stderr.strip()) == (
        2, f"cloudkon: error: {bad}:1: not a result (Expecting value: line 1 column 1 (char 0));"
           " resume into another file")


def test_a_long_quick_run_keeps_at_most_4096_tasks_in_flight(write_workload):
    # The client's window grows while bundles come back faster than it wakes, but never
    # past _MOST_TASKS_IN_FLIGHT tasks: full bundles of `sleep 0` would otherwise pile up
    # to 128 x 256 of them, and memory with them.
    from cloudkon.config import RunConfig
    from local.runner import LocalRunner

    runner = LocalRunner(RunConfig(write_workload("sleep 0\n" * 60_000), "window", workers=2))
    most = []
    send = runner.inbox.send_batch

    def counting_send(bodies):
        send(bodies)
        most.append(sum(len(b.tasks) for b in runner._in_flight.values()))

    runner.inbox.send_batch = counting_send
    summary = runner.run()

    assert summary.counts["succeeded"] == 60_000
    assert max(most) <= 4096, max(most)
