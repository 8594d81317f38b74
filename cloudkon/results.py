"""Results files: one JSON object per task and line (JSON Lines)."""

from __future__ import annotations

import json
import os
import sys
from typing import IO

from cloudkon.errors import OutputClosed, OutputError, UsageError
from cloudkon.model import ResultBundle


class ResultsWriter:
    """Writes each result as it arrives, so an interrupted run keeps what finished."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self._file: IO[str] = sys.stdout
            return
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"--output {path}: folder {parent} does not exist")
        if os.path.isdir(path):
            raise UsageError(f"--output {path}: is a directory")
        try:
            self._file = open(path, "w", encoding="utf-8", buffering=1 << 20)
        except OSError as exc:
            raise UsageError(f"--output {path}: {exc.strerror or exc}") from None

    def write(self, bundle: ResultBundle) -> None:
        dumps = json.dumps
        text = "".join(dumps(rec, ensure_ascii=False) + "\n" for rec in bundle.records())
        try:
            self._file.write(text)
        except BrokenPipeError:
            raise OutputClosed(f"--output {self.path}: the reader has gone") from None
        except OSError as exc:
            raise OutputError(f"--output {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            if self._file is sys.stdout:
                self._file.flush()
            else:
                self._file.close()
        except BrokenPipeError:
            raise OutputClosed(f"--output {self.path}: the reader has gone") from None
        except OSError as exc:
            raise OutputError(f"--output {self.path}: {exc.strerror or exc}") from None
