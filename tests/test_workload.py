"""The workload reader: which lines are tasks, how lines are numbered, how bad lines and
files that are no workload at all are reported."""

from __future__ import annotations

import gzip
import random
import re
import struct
import zlib

import pytest

from cloudkon.errors import WorkloadError
from cloudkon.limits import DEFAULT_BUNDLE_MS, DEFAULT_REMOTE_BUNDLE_MS
from cloudkon.workload import BLOCK_BYTES, Workload, sleep_ms

BLOCK = BLOCK_BYTES  # the reader takes the file a block at a time; lines may straddle blocks


def read(path, **kwargs):
    """The tasks of ``path`` as (line, command) tuples and the bad lines as (line) numbers."""
    bad = []
    workload = Workload(str(path), on_bad_line=bad.append, **kwargs)
    tasks = [tuple(t) for t in workload]
    assert all(b.path == str(path) for b in bad)
    return tasks, [b.line for b in bad]


# What is a task


def test_comments_and_blank_lines_are_not_tasks(write_workload):
    path = write_workload("# a comment\n\n   \nsleep 1\n  # an indented comment\n\techo hi\n")

    tasks, bad = read(path)

    assert tasks == [(4, "sleep 1"), (6, "echo hi")]
    assert bad == []


def test_crlf_lines_lose_the_carriage_return(write_workload):
    path = write_workload(b"echo a\r\nsleep 5\r\n# note\r\n\r\necho b\r\n")

    workload = Workload(str(path))
    tasks = [tuple(t) for t in workload]

    assert tasks == [(1, "echo a"), (2, "sleep 5"), (5, "echo b")]
    assert workload.sleep_tasks == 1 and workload.sleep_ms == 5


def test_utf8_bom_at_the_start_is_dropped(write_workload):
    path = write_workload(b"\xef\xbb\xbfsleep 3\necho \xc3\xa9t\xc3\xa9\n")

    workload = Workload(str(path))
    tasks = [tuple(t) for t in workload]

    assert tasks == [(1, "sleep 3"), (2, "echo été")]
    assert workload.sleep_tasks == 1


def test_utf8_bom_before_a_comment_leaves_a_comment(write_workload):
    tasks, _ = read(write_workload(b"\xef\xbb\xbf# header\necho a\n"))

    assert tasks == [(2, "echo a")]


def test_line_numbers_count_every_physical_line(write_workload):
    path = write_workload(
        b"# comment\n"  # 1
        b"\n"  # 2
        b"echo three\n"  # 3
        b"echo \xff\n"  # 4: not UTF-8
        b"sleep 1s\n"  # 5: not a valid sleep
        b"   \n"  # 6
        b"echo \x00\n"  # 7: NUL
        b"echo eight\n"  # 8
    )

    tasks, bad = read(path)

    assert tasks == [(3, "echo three"), (8, "echo eight")]
    assert bad == [4, 5, 7]


def test_last_line_without_a_trailing_newline_is_a_task(write_workload):
    tasks, _ = read(write_workload("echo a\nsleep 2"))

    assert tasks == [(1, "echo a"), (2, "sleep 2")]


def test_file_of_only_comments_and_blank_lines_holds_no_tasks(write_workload):
    path = write_workload("# nothing\n\n# to do\n")
    workload = Workload(str(path))

    assert list(workload) == []
    assert workload.tasks == 0 and workload.bad_lines == 0


# `sleep N`: milliseconds


@pytest.mark.parametrize(("command", "ms"), [
    ("sleep 0", 0),
    ("sleep 10", 10),
    ("sleep 1000", 1000),
    ("sleep 2.5", 2.5),
    ("sleep   7", 7),
    ("sleep\t3", 3),
])
def test_sleep_n_is_n_milliseconds(command, ms):
    assert sleep_ms(command) == ms


@pytest.mark.parametrize("command", [
    "sleep 1s", "sleep -1", "sleep 1 2", "sleep", "sleep abc", "sleep 1e3",
])
def test_sleep_that_is_not_sleep_n_is_an_error(command):
    with pytest.raises(ValueError):
        sleep_ms(command)


@pytest.mark.parametrize(("command", "says"), [
    ("sleep -1", "'sleep -1': a negative number of milliseconds"),
    ("sleep -0.5", "'sleep -0.5': a negative number of milliseconds"),
    ("sleep", "'sleep' without a number"),
    ("sleep 1s", "takes one number; write '/bin/sleep ...' for the shell's sleep"),
    ("sleep 1" + "0" * 400, "'sleep 1000000000000000...': more milliseconds than a number holds"),
])
def test_a_bad_sleep_line_says_what_is_wrong_with_it(command, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        sleep_ms(command)


@pytest.mark.parametrize("command", [
    "sleepy x", "sleep.sh", "sleep_ms 3", "/bin/sleep 1", "command sleep 10", "echo sleep 1",
])
def test_lines_that_only_look_like_sleep_are_shell_commands(command):
    assert sleep_ms(command) is None


def test_invalid_sleep_line_is_reported_and_not_run(write_workload):
    tasks, bad = read(write_workload("sleep 5\nsleep 1s\nsleepy x\n"))

    assert tasks == [(1, "sleep 5"), (3, "sleepy x")]
    assert bad == [2]


# Bad lines: reported with their number, the rest still read


def test_invalid_utf8_line_is_reported_and_the_rest_is_read(write_workload):
    tasks, bad = read(write_workload(b"echo a\necho caf\xe9\necho c\n"))

    assert tasks == [(1, "echo a"), (3, "echo c")]
    assert bad == [2]


def test_line_with_a_nul_byte_is_reported_and_the_rest_is_read(write_workload):
    tasks, bad = read(write_workload(b"echo a\necho \x00b\necho c\n"))

    assert tasks == [(1, "echo a"), (3, "echo c")]
    assert bad == [2]


def test_line_longer_than_the_limit_is_reported_and_the_rest_is_read(write_workload):
    path = write_workload(b"echo short\necho " + b"x" * 100 + b"\necho after\n")

    tasks, bad = read(path, max_line_bytes=16)

    assert tasks == [(1, "echo short"), (3, "echo after")]
    assert bad == [2]


def test_line_of_exactly_the_limit_is_a_task_even_with_crlf(write_workload):
    line = b"echo " + b"x" * 11  # 16 bytes
    tasks, bad = read(write_workload(line + b"\r\n" + line + b"\n" + line), max_line_bytes=16)

    assert tasks == [(n, line.decode()) for n in (1, 2, 3)]
    assert bad == []


def test_over_long_last_line_without_newline_is_reported(write_workload):
    tasks, bad = read(write_workload(b"echo a\necho " + b"y" * 50), max_line_bytes=16)

    assert tasks == [(1, "echo a")]
    assert bad == [2]


def test_line_larger_than_a_read_block_is_reported_and_good_lines_after_it_are_read(
        write_workload):
    path = write_workload(
        b"echo one\n# two\n" + b"echo " + b"z" * (3 * BLOCK) + b"\necho four\nsleep 5\n")

    tasks, bad = read(path)  # the default limit, 128 KiB

    assert tasks == [(1, "echo one"), (4, "echo four"), (5, "sleep 5")]
    assert bad == [3]


@pytest.mark.parametrize("starts_before_block_end", [1, 100, 2500, 4999, 5000, 5001, 5002])
def test_over_long_line_across_a_block_boundary_keeps_the_numbering(
        write_workload, starts_before_block_end):
    # Good lines up to a few bytes before the first block ends, then a 5000-byte line.
    fill = BLOCK - starts_before_block_end
    sleeps, blanks = divmod(fill, len(b"sleep 0\n"))
    long_line = b"x" * 5000
    path = write_workload(
        b"sleep 0\n" * sleeps + b"\n" * blanks + long_line + b"\necho after\necho last")

    tasks, bad = read(path, max_line_bytes=1000)

    long_at = sleeps + blanks + 1
    assert len(tasks) == sleeps + 2
    assert tasks[-2:] == [(long_at + 1, "echo after"), (long_at + 2, "echo last")]
    assert bad == [long_at]


def test_bad_lines_in_a_later_block_have_their_numbers(write_workload):
    lines = 200_000  # about 1.6 MB: the bad lines are read in the second block
    content = bytearray(b"sleep 0\n" * lines)
    content[8 * 150_000 + 6] = 0xFF  # line 150,001 is no longer UTF-8
    content[8 * 199_999 + 6] = 0  # the last line holds a NUL
    path = write_workload(bytes(content))

    bad = []
    workload = Workload(str(path), on_bad_line=bad.append)
    assert sum(len(b.tasks) for b in workload.bundles("j", 256, 20)) == lines - 2
    assert [b.line for b in bad] == [150_001, 200_000]
    assert workload.tasks == lines - 2 and workload.bad_lines == 2


# Bundles


def test_sleep_0_tasks_fill_bundles_to_their_size(write_workload):
    workload = Workload(str(write_workload("sleep 0\n" * 10)))

    bundles = list(workload.bundles("job", 4, 20))

    assert [len(b.tasks) for b in bundles] == [4, 4, 2]
    assert [b.seq for b in bundles] == [0, 1, 2]
    assert all(b.job_id == "job" for b in bundles)
    assert [line for b in bundles for line, _ in b.tasks] == list(range(1, 11))


def test_bundle_closes_when_its_sleeps_reach_the_budget(write_workload):
    workload = Workload(str(write_workload("sleep 10\n" * 5)))

    bundles = list(workload.bundles("job", 256, 20))

    assert [len(b.tasks) for b in bundles] == [2, 2, 1]
    assert [b.seq for b in bundles] == [0, 1, 2]


def test_shell_commands_travel_alone_with_the_local_budget(write_workload):
    workload = Workload(str(write_workload("echo a\ntrue\n# c\necho b\n")))

    bundles = list(workload.bundles("job", 256, DEFAULT_BUNDLE_MS))

    assert [b.tasks for b in bundles] == [[(1, "echo a")], [(2, "true")], [(4, "echo b")]]
    assert [b.seq for b in bundles] == [0, 1, 2]


def test_shell_commands_share_bundles_with_the_remote_budget(write_workload):
    workload = Workload(str(write_workload("true\n" * 250)))

    bundles = list(workload.bundles("job", 256, DEFAULT_REMOTE_BUNDLE_MS))

    # Each shell command is assumed to cost SHELL_TASK_MS: 2000 / 20 = 100 a bundle.
    assert [len(b.tasks) for b in bundles] == [100, 100, 50]


def test_counters_describe_what_was_read(write_workload):
    path = write_workload("sleep 10\nsleep 2.5\necho x\n# c\nsleep 1s\nsleep 0\necho \xff\n")
    workload = Workload(str(path))

    for _ in range(2):  # a second pass counts afresh
        bundles = list(workload.bundles("job", 256, 20))
        assert sum(len(b.tasks) for b in bundles) == 5
        assert workload.tasks == 5
        assert workload.sleep_tasks == 3
        assert workload.sleep_ms == 12.5
        assert workload.bad_lines == 1


def test_validate_reads_everything_and_returns_the_bad_line_count(write_workload):
    workload = Workload(str(write_workload(b"touch a\n\xff\ntouch b\nsleep x\n")))

    assert workload.validate() == 2
    assert workload.tasks == 2


# check(): files that are no workload at all


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    pixels = b"".join(b"\x00" + bytes(range(48)) for _ in range(16))  # 16x16 RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("content", [
    pytest.param(gzip.compress(b"sleep 0\n" * 1000 + b"echo hello\n" * 100, mtime=0), id="gzip"),
    pytest.param(_png(), id="png"),
    pytest.param("sleep 0\necho hi\n".encode("utf-16"), id="utf-16"),
    pytest.param(("sleep 10\n" * 20_000).encode("utf-16-le"), id="utf-16-le-no-bom"),
    pytest.param(bytes(range(256)) * 64, id="all-bytes"),
])
def test_binary_file_is_no_workload(write_workload, content):
    path = write_workload(content, name="data.bin")

    with pytest.raises(WorkloadError) as raised:
        Workload(str(path)).check()

    assert raised.value.path == str(path)
    assert str(path) in str(raised.value)


def test_missing_file_is_no_workload(tmp_path):
    path = str(tmp_path / "missing.txt")

    with pytest.raises(WorkloadError) as raised:
        Workload(path).check()

    assert raised.value.path == path and path in str(raised.value)


def test_directory_is_no_workload(tmp_path):
    with pytest.raises(WorkloadError) as raised:
        Workload(str(tmp_path)).check()

    assert raised.value.path == str(tmp_path) and str(tmp_path) in str(raised.value)


def test_empty_file_is_no_workload(write_workload):
    path = write_workload(b"")

    with pytest.raises(WorkloadError) as raised:
        Workload(str(path)).check()

    assert raised.value.path == str(path) and str(path) in str(raised.value)


def test_a_single_nul_line_among_good_lines_is_not_binary(write_workload):
    path = write_workload(b"echo a\n" * 50 + b"echo \x00\n" + b"echo b\n" * 50)

    Workload(str(path)).check()  # no error: a bad line, reported when read

    assert read(path)[1] == [51]


def test_a_single_invalid_utf8_line_among_good_lines_is_not_binary(write_workload):
    Workload(str(write_workload(b"echo a\n" * 10 + b"echo caf\xe9\n" + b"echo b\n" * 10))).check()


def test_a_nul_line_and_an_over_long_line_are_two_bad_lines_not_a_binary_file(write_workload):
    # The over-long line fills the rest of the first 64 KiB: among the whole lines looked
    # at, half are bad; by content, the file is text.
    path = write_workload(b"echo a\necho \x00b\n" + b"x" * 140_000 + b"\necho c\n")

    Workload(str(path)).check()  # no error

    assert read(path) == ([(1, "echo a"), (4, "echo c")], [2, 3])


@pytest.mark.parametrize("content", [
    pytest.param(b"\x7fELF\x02\x01\x01" + bytes(57) + bytes(range(256)) * 40, id="elf-like"),
    pytest.param(random.Random(12).randbytes(100_000), id="random-bytes"),
    pytest.param(b"\x00\n", id="one-nul-line"),
])
def test_data_that_is_mostly_not_text_is_binary(write_workload, content):
    with pytest.raises(WorkloadError, match="binary data"):
        Workload(str(write_workload(content))).check()


def test_utf16_text_is_refused_with_how_to_convert_it(write_workload):
    path = write_workload("sleep 0\necho hi\n".encode("utf-16"))

    with pytest.raises(WorkloadError) as raised:
        Workload(str(path)).check()

    assert str(raised.value) == (f"{path}: is UTF-16 text; a workload is UTF-8"
                                 " (iconv -f UTF-16 -t UTF-8 converts it)")


def test_terminal_colours_and_form_feeds_are_text(write_workload):
    Workload(str(write_workload("echo '\x1b[31mred\x1b[0m'\n\f\necho done\n" * 20))).check()


def test_long_first_line_cut_inside_a_character_by_the_sniff_is_text(write_workload):
    # 5 + 2 * 40,000 bytes: the 64 KiB sample ends in the middle of an "é".
    Workload(str(write_workload("echo " + "é" * 40_000 + "\nsleep 1\n"))).check()


def test_text_workload_passes_the_check(write_workload):
    Workload(str(write_workload("# header\nsleep 0\necho hi\n"))).check()


def test_ramped_bundles_are_full_and_end_small_each_with_half_the_work_left(write_workload):
    workload = Workload(str(write_workload("true\n" * 650)))

    bundles = list(workload.bundles("job", 256, DEFAULT_REMOTE_BUNDLE_MS, ramp=True))

    # Full bundles (100 commands: 2 s of work); then the last three bundles' work goes out
    # in bundles of half of what is left, at most a quarter of it and at least 1/32 (the
    # last takes what would be less): the job's end spreads over every thread.
    sizes = [len(b.tasks) for b in bundles]
    assert sizes == [100, 100, 100, 100, 62, 62, 62, 32, 16, 8, 8]
    assert [b.seq for b in bundles] == list(range(len(bundles)))
    assert [t for b in bundles for t in b.tasks] == [(n, "true") for n in range(1, 651)]
    again = [len(b.tasks) for b in workload.bundles("job", 256, DEFAULT_REMOTE_BUNDLE_MS,
                                                    ramp=True)]
    assert again == sizes  # the same file makes the same bundles: redeliveries dedup


@pytest.mark.parametrize(("text", "sizes"), [
    ("true\n" * 4, [1, 1, 1, 1]),  # a few commands spread over four threads
    ("sleep 1000\n" * 7, [2, 1, 1, 1, 1, 1]),  # long tasks end one to a bundle
    ("sleep 0\n" * 25_000, [10_000, 10_000, 5_000]),  # no work: bundles close by count
])
def test_ramped_bundles_of_short_and_workless_jobs(write_workload, text, sizes):
    workload = Workload(str(write_workload(text)))
    assert [len(b.tasks) for b in workload.bundles("job", 10_000, DEFAULT_REMOTE_BUNDLE_MS,
                                                   ramp=True)] == sizes
