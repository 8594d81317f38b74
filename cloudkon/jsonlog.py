"""Log records as JSON lines (`cloudkon worker --log-json`), for CloudWatch Logs and jq.

Each line holds the time, level, logger and message, and the ids a record was logged with
(``extra={"job_id": ..., "bundle": ..., "message_id": ...}``), as fields of their own.
"""

from __future__ import annotations

import json
import logging
import time

# Fields of extra= that become fields of the line.
FIELDS = ("job_id", "bundle", "message_id", "task_id", "counts")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
