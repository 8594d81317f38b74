"""Draw the comparison runs' throughput ratios as one PNG, a panel per compare-* group.

    .venv/bin/python benchmarks/tools/plot_runs.py RUNS.json OUT.png

RUNS.json is what `pytest benchmarks/test_compare.py --cloudkon-json RUNS.json` or
`cloudkon bench --json` writes. Bars are tasks/s against the group's baseline (log
scale); hatched bars ran only the first tasks of the workload (see each row's note).
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(runs_path: str, out_path: str) -> None:
    with open(runs_path, encoding="utf-8") as f:
        doc = json.load(f)
    groups: dict[str, list[dict]] = {}
    for run in doc["runs"]:
        if run["group"].startswith("compare-") and run["tasks_per_s"]:
            groups.setdefault(run["group"], []).append(run)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4.6), sharey=True,
                             squeeze=False)
    for ax, (group, runs) in zip(axes[0], groups.items()):
        names = [r["contender"] for r in runs]
        ratios = [r["tasks_per_s"] / runs[0]["tasks_per_s"] for r in runs]
        bars = ax.bar(range(len(runs)), ratios, color=[
            "tab:blue" if r["contender"].startswith(("cloudkon", "remote-")) else "tab:gray"
            for r in runs])
        for bar, r in zip(bars, runs):
            if r["note"]:
                bar.set_hatch("//")
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(runs)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{group} ({runs[0]['tasks']:,} tasks)", fontsize=10)
    axes[0][0].set_ylabel(f"tasks/s against {runs[0]['baseline']} (log)")
    m = doc["machine"]
    fig.suptitle(f"CloudKon comparison runs: nproc {m['nproc']}, Python {m['python']};"
                 " blue: CloudKon, grey: peers, hatched: first tasks only", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
