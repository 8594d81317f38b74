"""Baseline "bare loop": the floor of per-task work in Python, single-threaded.

Reads a workload file and, for each line: decodes and strips it, skips blanks and
comments, recognises ``sleep N`` (N milliseconds; sleeps only if N > 0) and records a
(line, status, start, end) tuple with time.time(). Any other line runs with /bin/sh -c.
Prints {"tasks": ..., "succeeded": ...} as JSON.

    python bare_loop.py WORKLOAD
"""

import json
import subprocess
import sys
import time


def main(path: str) -> None:
    results = []
    record = results.append
    now = time.time
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            s = raw.decode("utf-8").strip()
            if not s or s[0] == "#":
                continue
            start = now()
            parts = s.split()
            if parts[0] == "sleep" and len(parts) == 2:
                ms = float(parts[1])
                if ms > 0:
                    time.sleep(ms / 1000.0)
                status = "succeeded"
            else:
                rc = subprocess.call(["/bin/sh", "-c", s])
                status = "succeeded" if rc == 0 else "failed"
            record((n, status, start, now()))
    ok = sum(1 for r in results if r[1] == "succeeded")
    print(json.dumps({"tasks": len(results), "succeeded": ok}))


if __name__ == "__main__":
    main(sys.argv[1])
