"""The collector accepts only results for the job's own task lines: a result for a line
beyond the last task, inside a skipped run, or below 1 is dropped with a warning and
counted, and never makes a job complete."""

from __future__ import annotations

import json
import logging

import pytest

from cloudkon.backends.memory import MemoryBroker
from cloudkon.codec import decode_results, encode_results
from cloudkon.errors import CodecError
from cloudkon.model import SUCCEEDED, ResultBundle
from submitter.collect import Collector
from submitter.manifest import SUBMITTED, Manifest, MemoryManifests


def _result(line: int) -> tuple:
    return (line, f"echo {line}", SUCCEEDED, 0, None, 10.0, 10.5, "", "")


def _body(job_id: str, seq: int, lines) -> str:
    return encode_results(ResultBundle(job_id, seq, [_result(n) for n in lines], 9.0, "w1"))


def _forged(job_id: str, seq: int, lines) -> str:
    """A results body naming ``lines`` whatever they are (encode_results would not check)."""
    doc = json.loads(_body(job_id, seq, [1] * len(lines)))
    doc["results"]["line"] = list(lines)
    return json.dumps(doc)


@pytest.fixture
def out():
    broker = MemoryBroker()
    broker.create("output")
    return broker.queue("output")


def _manifests(job_id: str, tasks: int, last_line: int, skipped=()) -> MemoryManifests:
    manifests = MemoryManifests()
    manifests.save(Manifest(job_id, SUBMITTED, "w.txt", 9.0, tasks=tasks, bundles=2,
                            last_line=last_line, skipped=[list(s) for s in skipped]))
    return manifests


@pytest.mark.parametrize("line", [0, -1])
def test_the_codec_refuses_a_result_line_below_1(line):
    with pytest.raises(CodecError, match=f"line {line} is not a line number >= 1"):
        decode_results(_forged("job-v", 0, [line]))


@pytest.mark.parametrize("line", ["3", 2.0, None, True, 10 ** 30])
def test_the_codec_refuses_a_result_line_that_is_no_line_number(line):
    with pytest.raises(CodecError):
        decode_results(_forged("job-v", 0, [line]) if line != 10 ** 30 else
                       _forged("job-v", 0, [line]).replace(str(10 ** 30), "1e400"))


def test_results_for_lines_beyond_the_job_do_not_complete_it(out, caplog):
    manifests = _manifests("job-v", tasks=3, last_line=3)
    out.send_batch([_body("job-v", 0, [1, 2]), _body("job-v", 1, [99]),
                    _forged("job-v", 1, [-1])])
    written = []
    with caplog.at_level(logging.WARNING):
        collection = Collector("job-v", out, manifests, on_results=written.append).run(timeout=1)
    assert not collection.complete and collection.missing == ["job-v:3"]
    assert collection.dropped == 1  # line 99; the body with line -1 is no results message
    assert collection.summary.to_dict()["dropped_results"] == 1
    assert "dropped results 1" in collection.summary.to_text()
    assert sorted(r[0] for b in written for r in b.results) == [1, 2]
    assert any("job job-v: bundle 1 (attempt 1, worker w1) holds 1 result(s) for lines that"
               " are no task of the job (99); dropped" in r.getMessage() for r in caplog.records)
    assert any("is not a results message" in r.getMessage() for r in caplog.records)


def test_a_result_for_a_skipped_line_is_dropped_and_counted(out):
    # Lines 2 and 3 are blank or comments: tasks are 1, 4 and 5.
    manifests = _manifests("job-w", tasks=3, last_line=5, skipped=[(2, 3)])
    out.send_batch([_body("job-w", 0, [1, 2, 3]), _body("job-w", 1, [5, 6])])
    collection = Collector("job-w", out, manifests).run(timeout=1)
    assert not collection.complete and collection.missing == ["job-w:4"]
    assert collection.dropped == 3


def test_a_job_whose_task_lines_all_have_results_is_complete_despite_strays(out):
    manifests = _manifests("job-y", tasks=3, last_line=5, skipped=[(2, 3)])
    out.send_batch([_body("job-y", 0, [1, 2]), _body("job-y", 1, [4, 5, 6])])
    collection = Collector("job-y", out, manifests).run(timeout=5)
    assert collection.complete and collection.dropped == 2
    assert collection.summary.counts[SUCCEEDED] == 3


class _SplitEndingAfterOneRead(MemoryManifests):
    """The job's record, SUBMITTING at the first read and final from the second on."""

    def __init__(self, started: Manifest, final: Manifest) -> None:
        super().__init__()
        self.reads = [started]
        self.final = final
        self.start(started)

    def load_record(self, job_id):
        record = super().load_record(job_id)
        if self.reads:
            self.reads.pop()
        else:
            self.save(self.final)
            record = super().load_record(job_id)
        return record


def test_results_before_the_split_ends_are_checked_once_it_has(out):
    started = Manifest("job-x", "SUBMITTING", "w.txt", 9.0)
    manifests = _SplitEndingAfterOneRead(started, started.done(tasks=2, bundles=1, last_line=2))
    out.send_batch([_body("job-x", 0, [1, 2, 7])])
    written = []
    collection = Collector("job-x", out, manifests, on_results=written.append).run(timeout=10)
    assert collection.complete and collection.dropped == 1
    assert sorted(r[0] for b in written for r in b.results) == [1, 2]


def test_results_beyond_the_pending_limit_wait_on_the_queue_for_the_split(out, monkeypatch):
    from submitter import collect

    monkeypatch.setattr(collect, "MAX_PENDING_RESULTS", 2)
    monkeypatch.setattr(collect, "PENDING_DELAY_SECONDS", 0)
    started = Manifest("job-z", "SUBMITTING", "w.txt", 9.0)
    manifests = _SplitEndingAfterOneRead(started, started.done(tasks=4, bundles=4, last_line=4))
    out.send_batch([_body("job-z", n - 1, [n]) for n in (1, 2, 3, 4)])
    written = []
    collection = Collector("job-z", out, manifests, on_results=written.append).run(timeout=10)
    assert collection.complete and collection.dropped == 0
    assert sorted(r[0] for b in written for r in b.results) == [1, 2, 3, 4]
    assert len(out) == 0
