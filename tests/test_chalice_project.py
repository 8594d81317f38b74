"""The Chalice project from a fresh clone: `chalice package`, `chalice local` and a plain
`import app` with the stage's bucket unset as the repository has it, and `cloudkon setup`
filling it in. Each runs on a copy of the project, as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
from submit_helpers import REGION, ROOT

ACCOUNT = "123456789012"  # moto's
CHALICE = Path(sys.executable).parent / "chalice"


def _fresh_project(folder: Path) -> Path:
    """A copy of the project as a fresh clone has it: the stage's bucket empty."""
    folder.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy(ROOT / name, folder / name)
    for package in (ROOT / "vendor").iterdir():  # what the Lambda imports, as a clone has it
        (folder / package.name).symlink_to(ROOT / package.name)
    shutil.copytree(ROOT / "vendor", folder / "vendor", symlinks=True)
    shutil.copytree(ROOT / ".chalice", folder / ".chalice")
    stage = json.loads((folder / ".chalice" / "config.json").read_text())
    assert stage["stages"]["dev"]["environment_variables"]["CLOUDKON_BUCKET"] == ""
    return folder


def _no_aws(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment without AWS credentials or configuration (and no way to find any)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDKON_"))}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
               **extra)
    return env


def _chalice(project: Path, env: dict, *args: str, timeout: float = 240):
    return subprocess.run([str(CHALICE), *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _subscribed_bucket(out: Path) -> str:
    terraform = json.loads((out / "chalice.tf.json").read_text())
    notify = terraform["resource"]["aws_s3_bucket_notification"]
    return next(iter(notify.values()))["bucket"]


def test_chalice_package_without_a_bucket_or_credentials_says_what_to_do_in_one_line(tmp_path):
    project = _fresh_project(tmp_path / "project")
    proc = _chalice(project, _no_aws(tmp_path, AWS_DEFAULT_REGION=REGION), "package", "out")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("cloudkon: error: .chalice/config.json: the stage 'dev' names"
                                  " no CLOUDKON_BUCKET")
    assert "no AWS credentials found" in proc.stderr and "run `cloudkon setup`" in proc.stderr


def test_chalice_package_without_a_bucket_subscribes_to_the_prefix_bucket_it_finds(
        tmp_path, moto_server):
    prefix = f"pkg{os.getpid()}"
    bucket = f"{prefix}-workloads-{ACCOUNT}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    project = _fresh_project(tmp_path / "project")
    env = _no_aws(tmp_path, AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                  AWS_DEFAULT_REGION=REGION, CLOUDKON_PREFIX=prefix)
    config = json.loads((project / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"]["CLOUDKON_PREFIX"] = prefix
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    proc = _chalice(project, env, "package", "--pkg-format", "terraform", "out")
    assert proc.returncode == 0, proc.stderr
    assert f"subscribing to the prefix's bucket {bucket}" in proc.stderr
    assert _subscribed_bucket(project / "out") == bucket


def test_cloudkon_setup_fills_in_the_stage_and_chalice_package_then_needs_no_credentials(
        tmp_path, aws_config, cloudkon):
    project = _fresh_project(tmp_path / "project")
    proc = cloudkon("setup", "--prefix", aws_config.prefix, cwd=project)
    assert proc.returncode == 0, proc.stderr
    bucket = aws_config.bucket(ACCOUNT)
    assert (f"chalice stage .chalice/config.json dev updated (wrote"
            f" CLOUDKON_PREFIX={aws_config.prefix}, CLOUDKON_BUCKET={bucket})") \
        == " ".join(proc.stdout.splitlines()[-1].split())
    variables = json.loads((project / ".chalice" / "config.json").read_text())[
        "stages"]["dev"]["environment_variables"]
    assert variables == {"CLOUDKON_PREFIX": aws_config.prefix, "CLOUDKON_BUCKET": bucket}
    again = cloudkon("setup", "--prefix", aws_config.prefix, cwd=project)
    assert " ".join(again.stdout.splitlines()[-1].split()).startswith(
        "chalice stage .chalice/config.json dev exists")

    package = _chalice(project, _no_aws(tmp_path, AWS_DEFAULT_REGION=REGION), "package",
                       "--pkg-format", "terraform", "out")
    assert package.returncode == 0, package.stderr
    assert _subscribed_bucket(project / "out") == bucket


def test_chalice_local_ends_at_once_pointing_at_the_sandbox(tmp_path):
    project = _fresh_project(tmp_path / "project")
    proc = _chalice(project, _no_aws(tmp_path, AWS_DEFAULT_REGION=REGION), "local", "--port",
                    "0", timeout=120)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == (
        "cloudkon: error: `chalice local` serves HTTP routes, and this app has none: its"
        " handler takes S3 events. Run `cloudkon sandbox` to try it with S3 events, on this"
        " machine, without an AWS account")


def test_app_imports_from_the_repository_root_with_the_bucket_unset(tmp_path):
    env = _no_aws(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import app; print(sorted(app.app.handler_map))"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['provision_workers', 'split_workload']"
