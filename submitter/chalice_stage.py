"""The Chalice stage's variables that `cloudkon setup` fills in: the prefix and the workload
bucket the Lambda of ``app.py`` is subscribed to, in the project's ``.chalice/config.json``.

Not part of the Lambda: only the command line writes the file.
"""

from __future__ import annotations

import json
import os

from cloudkon.backends.resources import EXISTS, UPDATED, Resource
from cloudkon.errors import UsageError
from submitter.s3_lambda import CONFIG_FILE, BUCKET_VARIABLE, DEFAULT_STAGE, PREFIX_VARIABLE


def config_path(project_dir: str) -> str:
    """Where the Chalice project in ``project_dir`` keeps its configuration."""
    return os.path.join(project_dir, CONFIG_FILE)


def fill_stage(project_dir: str, prefix: str, bucket: str,
               stage: str = DEFAULT_STAGE) -> Resource | None:
    """Write ``prefix`` and ``bucket`` into the stage's environment_variables of the
    project's ``.chalice/config.json``; None if ``project_dir`` holds no Chalice project.
    The file keeps everything else it holds."""
    path = config_path(project_dir)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: not a Chalice configuration (a JSON object)")
    stages = config.setdefault("stages", {})
    variables = stages.setdefault(stage, {}).setdefault("environment_variables", {})
    wanted = {PREFIX_VARIABLE: prefix, BUCKET_VARIABLE: bucket}
    detail = ", ".join(f"{k}={v}" for k, v in wanted.items())
    if all(variables.get(k) == v for k, v in wanted.items()):
        return Resource("chalice stage", f"{CONFIG_FILE} {stage}", EXISTS, detail)
    variables.update(wanted)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    return Resource("chalice stage", f"{CONFIG_FILE} {stage}", UPDATED, f"wrote {detail}")
