"""Helpers of the submission tests: the Chalice app driven by chalice.test.Client against the
moto server, workloads of mixed kinds, results files."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote_plus

import boto3
from chalice.test import Client

from cloudkon.config import AwsConfig

ROOT = Path(__file__).resolve().parent.parent
BUCKET_SUFFIX = "moto"
REGION = "us-east-1"


def load_app():
    """The Chalice app of app.py. The decorator needs a bucket name at import time; the
    handler takes its bucket from each event, so any name serves."""
    if "app" not in sys.modules:
        os.environ.setdefault("CLOUDKON_BUCKET", "cloudkon-workloads-any")
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
    return importlib.import_module("app").app


def chalice_project(folder: Path, config: AwsConfig) -> Path:
    """A Chalice project folder whose dev stage names ``config``'s prefix and bucket."""
    (folder / ".chalice").mkdir(parents=True, exist_ok=True)
    stage = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage["stages"]["dev"]["environment_variables"].update(
        CLOUDKON_PREFIX=config.prefix, CLOUDKON_BUCKET=config.bucket(BUCKET_SUFFIX))
    (folder / ".chalice" / "config.json").write_text(json.dumps(stage))
    return folder


def deliver_upload(project: Path, bucket: str, key: str, times: int = 1) -> None:
    """Deliver the S3 event of an upload of ``key`` to the Lambda, ``times`` times, as S3
    sends it: with the key quote_plus-encoded."""
    client = Client(load_app(), stage_name="dev", project_dir=str(project))
    event = client.events.generate_s3_event(bucket=bucket, key=quote_plus(key))
    for _ in range(times):
        client.lambda_.invoke("split_workload", event)


def make_bucket(config: AwsConfig) -> str:
    name = config.bucket(BUCKET_SUFFIX)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=name)
    return name


def mixed_workload(tasks: int, ran_file: Path | None = None) -> str:
    """``tasks`` tasks, mostly `sleep 0`, with a few dozen shell commands of every outcome:
    succeeding with output, failing, printing to stderr, timing out (with a 1 s limit);
    each shell command appends its line's number to ``ran_file`` if given."""
    kinds = [
        "echo out {n}",
        "sh -c 'echo err {n} >&2; exit 3'",
        "printf 'a\\nb {n}\\n'",
        "false",
        "sleep 3",
        "test {n} -gt 0",
    ]
    lines = ["# a mixed workload", ""]
    shell = 0
    every = max(tasks // 40, 1)
    for n in range(tasks):
        if n % every == 7 % every:
            lines.append(kinds[shell % len(kinds)].format(n=n))
            shell += 1
        else:
            lines.append("sleep 0")
    lines.insert(len(lines) // 2, "/bin/sleep 5")  # over the time limit
    if ran_file is not None:
        lines = [f"echo {i} >> {ran_file}; {line}" if i > 2 and not line.startswith("sleep ")
                 else line for i, line in enumerate(lines, 1)]
    return "\n".join(lines) + "\n"


def read_results(path: Path) -> dict[int, dict]:
    """The results file as {line: record}; fails on a line reported twice."""
    records: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for text in f:
            record = json.loads(text)
            assert record["line"] not in records, f"line {record['line']} has two results"
            records[record["line"]] = record
    return records


def outcome(record: dict) -> tuple:
    return record["command"], record["status"], record["exit_code"], record["stdout"]
