"""Lines that need no shell are started directly, with the results of `/bin/sh -c LINE`.

A corpus of lines runs both through the executor and through `/bin/sh -c` itself, and
every result must be the same: status, exit code, signal, stdout, stderr, environment."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

import cloudkon.spawn
from cloudkon.commandline import direct_argv, find_program
from cloudkon.executor import Executor
from cloudkon.model import Result, task_id

SCRIPTS = {
    "parent.sh": "#!/bin/sh\nps -o comm= -p $PPID\n",
    "segv.sh": "#!/bin/sh\nkill -SEGV $$\n",
    "term.sh": "#!/bin/sh\necho before; kill -TERM $$\n",
    "pipe.sh": "#!/bin/sh\nkill -PIPE $$\n",
    "exit5.sh": "#!/bin/sh\necho out; echo err >&2; exit 5\n",
    "noshebang": "echo run by the shell; exit 7\n",
    "args.sh": '#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n',
}

CORPUS = [
    "true", "false", "true --help", "/bin/echo hello   world", "ls /no/such/folder",
    "nosuchprog a b", "./nofile", "/tmp", "./notexecutable.sh", "./noshebang", "./segv.sh",
    "./term.sh", "./pipe.sh", "./exit5.sh", "env", "printenv PWD", "cat",
    "head -c 5 /dev/zero", "./args.sh a=b  c\td", "  ./args.sh   spaced  ", "echo -e x",
    "sh -c 'exit 3'", "ls -d .", "./args.sh héllo wörld", "dd if=/dev/null of=/dev/null status=none",
    "A=1 printenv A", "ls *.sh", "./exit5.sh 2>&1", "cd / && pwd",
]


@pytest.fixture
def scripts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in SCRIPTS.items():
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o755)
    (tmp_path / "notexecutable.sh").write_text("#!/bin/sh\necho no\n")
    return tmp_path


def through_the_shell(line: int, command: str) -> Result:
    env = dict(os.environ, CLOUDKON_JOB_ID="job", CLOUDKON_TASK_ID=task_id("job", line),
               CLOUDKON_LINE=str(line))
    proc = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                          capture_output=True, env=env, start_new_session=True, timeout=30)
    code, sig = proc.returncode, None
    if code < 0:
        code, sig = None, signal.Signals(-code).name
    return Result(line, command, "succeeded" if code == 0 else "failed", code, sig, 0, 0,
                  proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


def normalised(result: Result, command: str) -> tuple:
    out = result.stdout
    if command == "env":  # the same variables; the shell may export them in another order
        out = sorted(out.splitlines())
    return (result.status, result.exit_code, result.signal, out, result.stderr)


@pytest.mark.parametrize("command", CORPUS)
def test_a_line_runs_with_the_results_of_sh_c(scripts, command):
    executor = Executor(timeout=30)

    ours = Result._make(executor.run("job", 1, command))
    theirs = through_the_shell(1, command)

    assert normalised(ours, command) == normalised(theirs, command)


def test_a_line_without_shell_syntax_starts_without_a_shell(scripts):
    parent = Result._make(Executor(timeout=30).run("job", 1, "./parent.sh"))

    assert parent.status == "succeeded"
    assert parent.stdout.strip() not in ("sh", "dash")  # started by the worker itself
    assert through_the_shell(1, "./parent.sh").stdout.strip() in ("sh", "dash")


@pytest.mark.parametrize(("command", "argv"), [
    ("./simulate --seed 7", ["./simulate", "--seed", "7"]),
    ("python3 analyse.py input.csv", ["python3", "analyse.py", "input.csv"]),
    ("dd if=a of=b", ["dd", "if=a", "of=b"]),
    ("  ls \t -l  ", ["ls", "-l"]),
    ("true", ["true"]),
    ("true x", None), ("echo hi", None), ("cd /tmp", None), ("exit 3", None),
    ("A=1 cmd", None), ("ls *.txt", None), ("a | b", None), ("a > f", None),
    ("echo $HOME", None), ("'quoted' x", None), ("x # comment", None), ("~/bin/x", None),
    ("a && b", None), ("(a)", None), ("a\\ b", None), ("if true", None),
])
def test_which_lines_need_the_shell(command, argv):
    assert direct_argv(command) == argv


def test_a_timed_out_direct_task_is_ended_by_its_signal_as_under_the_shell(scripts):
    result = Result._make(Executor(timeout=0.3).run("job", 1, "/bin/sleep 5"))

    assert (result.status, result.exit_code, result.signal) == ("timed_out", None, "SIGTERM")


# How the program is found and started: the other ways give the same results.

SHORT_CORPUS = ["true", "false", "nosuchprog a b", "./noshebang", "./pipe.sh", "./exit5.sh",
                "printenv PWD", "ls -d .", "./notexecutable.sh", "/tmp"]


@pytest.mark.parametrize("command", SHORT_CORPUS)
def test_a_task_path_other_than_the_workers_is_searched_as_the_shell_would(
        scripts, monkeypatch, command):
    # The task gets its own PATH (here: with the scripts' folder first), not the worker's.
    monkeypatch.setenv("PATH", f"{scripts}:{os.environ['PATH']}")
    environ = {k.encode(): v.encode() for k, v in os.environ.items()}
    executor = Executor(timeout=30)
    monkeypatch.setenv("PATH", "/nowhere")  # the worker's PATH is another one now

    ours = Result._make(executor.run("job", 1, command))
    monkeypatch.setenv("PATH", environ[b"PATH"].decode())
    theirs = through_the_shell(1, command)

    assert normalised(ours, command) == normalised(theirs, command)


@pytest.mark.parametrize("command", SHORT_CORPUS)
def test_a_task_started_with_os_posix_spawn_has_the_same_results(scripts, monkeypatch, command):
    monkeypatch.setattr(cloudkon.spawn, "_spawner", cloudkon.spawn._os_spawn)

    ours = Result._make(Executor(timeout=30).run("job", 1, command))

    assert normalised(ours, command) == normalised(through_the_shell(1, command), command)


def test_the_program_found_is_the_first_executable_file_on_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder, mode in (("a", 0o644), ("b", 0o755), ("c", 0o755)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "prog").write_text("#!/bin/sh\n")
        (tmp_path / folder / "prog").chmod(mode)
    (tmp_path / "b" / "dir").mkdir()
    (tmp_path / "here").write_text("#!/bin/sh\n")
    (tmp_path / "here").chmod(0o755)
    path = b"a:b:c"

    assert find_program("prog", {b"PATH": path}) == b"b/prog"  # a/prog is not executable
    assert find_program("dir", {b"PATH": b"b:c"}) is None  # a folder is no program
    assert find_program("here", {b"PATH": b"a::c"}) == b"here"  # empty entry: this folder
    assert find_program("./x", {}) == b"./x"  # a slash: the name itself
    assert find_program("prog", {}) is None  # no PATH: the shell decides


def test_a_program_moved_or_added_on_the_path_during_a_run_is_run_from_where_it_is_now(
        tmp_path, monkeypatch):
    # The executor keeps where it found a program; a task must still run what the shell
    # would run now when the program has gone from there, or was not found at first.
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "prog").write_text(f"#!/bin/sh\necho {folder}\n")
        (tmp_path / folder / "prog").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}:{os.environ['PATH']}")
    executor = Executor(timeout=30)

    def prog() -> str:
        return Result._make(executor.run("job", 1, "prog")).stdout

    assert prog() == "a\n"
    (tmp_path / "a" / "prog").unlink()
    assert prog() == "b\n"  # gone from a/: from b/, as the shell finds it
    assert prog() == "b\n"
    assert Result._make(executor.run("job", 2, "prog2")).exit_code == 127  # not yet there
    (tmp_path / "b" / "prog2").write_text("#!/bin/sh\necho new\n")
    (tmp_path / "b" / "prog2").chmod(0o755)
    assert Result._make(executor.run("job", 3, "prog2")).stdout == "new\n"


@pytest.mark.parametrize("libc", ["glibc", "other"])
def test_a_task_inherits_no_descriptor_of_the_worker_beyond_0_1_2(tmp_path, monkeypatch, libc):
    if libc == "other":  # os.posix_spawn, after the worker's descriptors are made close-on-exec
        monkeypatch.setattr(cloudkon.spawn, "_spawner", None)
        monkeypatch.setattr(cloudkon.spawn.os, "confstr", lambda name: None)
    inherited = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT)
    os.set_inheritable(inherited, True)  # as a descriptor the worker was started with
    try:
        for command in ("ls /proc/self/fd", "sh -c 'ls /proc/$$/fd'"):
            result = Result._make(Executor(timeout=30).run("job", 1, command))
            assert result.status == "succeeded", result
            assert str(inherited) not in result.stdout.split(), (command, result.stdout)
    finally:
        os.close(inherited)


def test_a_task_keeps_the_signals_the_worker_ignores_and_gets_the_others_at_their_defaults(
        monkeypatch):
    monkeypatch.setattr(cloudkon.spawn, "_spawner", None)  # made afresh, under this SIGHUP
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    executor = Executor(timeout=30)
    try:
        result = Result._make(executor.run("job", 1, "grep SigIgn /proc/self/status"))
    finally:
        signal.signal(signal.SIGHUP, previous)
        executor.close()

    ignored = int(result.stdout.split()[1], 16)  # bit N-1: signal N
    assert ignored & 1 << (signal.SIGHUP - 1), result.stdout
    # Python ignores SIGPIPE and SIGXFSZ; a task gets them at their defaults.
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)), result.stdout
