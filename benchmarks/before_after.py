"""The local flavour before and after a change, measured in one run, rounds interleaved.

    python -m benchmarks.before_after REV [--rounds N] [--scale F]

Runs the local benchmarks' workloads (300,000 `sleep 0`; 2,000 `true`; 1,000 lines of the
comparison's mixed workload, its `sleep N` lines given to xargs as `sleep N/1000`; peak RSS on
1,000,000 and 10,000 `sleep 0`) through the bare single-threaded loop, `xargs -P $(nproc)
sh -c`, the spawn floor (benchmarks/baselines/spawn_floor.py: $(nproc) Python threads that
only posix_spawn each line directly and wait, with os.posix_spawn and with libc's through
ctypes), cloudkon as of git revision REV and cloudkon as checked out, one round of each in
turn, so that a machine whose load drifts (these are shared) weighs on all of them alike.
Prints the best round of each and the ratios the issues name. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.harness import (
    BASELINES,
    MEMORY_LARGE_TASKS,
    MEMORY_SMALL_TASKS,
    PYTHON,
    SHELL_TASKS,
    SLEEP0_TASKS,
    cloudkon_argv,
    export_revision,
    nproc,
    run_process,
    scaled,
    write_workload,
)
from benchmarks.workloads import MIXED, shell_line


def write_lines(path: Path, cycle, n: int) -> Path:
    """A workload of ``n`` lines repeating ``cycle``."""
    lines = [cycle[i % len(cycle)] for i in range(n)]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def best(argvs: dict[str, list[str]], rounds: int, folder: Path, stdin: dict[str, Path],
         peak_rss: bool = False) -> dict[str, float]:
    """The best (least) wall seconds, or peak RSS in MB, of each command over ``rounds``
    rounds taken in turn."""
    found: dict[str, float] = {}
    for _ in range(rounds):
        for name, argv in argvs.items():
            run = run_process(argv, cwd=folder, log=folder / f"{name}.log",
                              stdin_path=stdin.get(name), peak_rss=peak_rss)
            value = run.peak_rss_kib / 1024.0 if peak_rss else run.wall
            found[name] = min(found.get(name, value), value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare with (e.g. main~3)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    args = parser.parse_args()
    n = nproc()
    with tempfile.TemporaryDirectory(prefix="cloudkon-before-after-") as tmp:
        folder = Path(tmp)
        before = export_revision(args.rev, folder / "before")
        sleep0 = write_workload(folder / "sleep0.txt", "sleep 0", scaled(SLEEP0_TASKS, args.scale))
        true = write_workload(folder / "true.txt", "true", scaled(SHELL_TASKS, args.scale))
        mixed_n = scaled(MIXED.default_tasks, args.scale)
        mixed = write_lines(folder / "mixed.txt", MIXED.cycle, mixed_n)
        mixed_sh = write_lines(folder / "mixed.sh.txt", [shell_line(x) for x in MIXED.cycle], mixed_n)
        small = write_workload(folder / "10k.txt", "sleep 0", scaled(MEMORY_SMALL_TASKS, args.scale))
        large = write_workload(folder / "1m.txt", "sleep 0", scaled(MEMORY_LARGE_TASKS, args.scale))

        s = best({"bare-loop": [PYTHON, str(BASELINES / "bare_loop.py"), str(sleep0)],
                  "before": cloudkon_argv(sleep0, 4, before),
                  "after": cloudkon_argv(sleep0, 4)}, args.rounds, folder, {})
        xargs = ["xargs", "-P", str(n), "-I{}", "sh", "-c", "{}"]
        floor = [PYTHON, str(BASELINES / "spawn_floor.py"), str(true), str(n)]
        t = best({"xargs": xargs, "floor-os": [*floor, "os"], "floor-libc": [*floor, "libc"],
                  "before": cloudkon_argv(true, n, before),
                  "after": cloudkon_argv(true, n)}, max(3, args.rounds // 2), folder,
                 {"xargs": true})
        x = best({"xargs": xargs, "before": cloudkon_argv(mixed, n, before),
                  "after": cloudkon_argv(mixed, n)},
                 max(min(3, args.rounds), args.rounds // 2), folder,
                 {"xargs": mixed_sh})
        m = best({"before-1M": cloudkon_argv(large, 4, before),
                  "after-1M": cloudkon_argv(large, 4), "after-10k": cloudkon_argv(small, 4)},
                 3, folder, {}, peak_rss=True)

    print(f"before = {args.rev}, after = this checkout; best of interleaved rounds, nproc {n}")
    print(f"sleep 0 x{scaled(SLEEP0_TASKS, args.scale):,}: bare {s['bare-loop']:.3f} s,"
          f" before {s['before']:.3f} s, after {s['after']:.3f} s")
    print(f"  after / bare loop (tasks/s)  {s['bare-loop'] / s['after']:.2f}x"
          f"   before / bare loop {s['bare-loop'] / s['before']:.2f}x"
          f"   after / before {s['before'] / s['after']:.2f}x")
    print(f"true x{scaled(SHELL_TASKS, args.scale):,}: xargs -P{n} {t['xargs']:.3f} s,"
          f" before {t['before']:.3f} s, after {t['after']:.3f} s")
    print(f"  after / xargs (tasks/s)  {t['xargs'] / t['after']:.2f}x"
          f"   before / xargs {t['xargs'] / t['before']:.2f}x"
          f"   after / before {t['before'] / t['after']:.2f}x")
    print(f"  spawn floor: os.posix_spawn {t['floor-os']:.3f} s"
          f" ({t['xargs'] / t['floor-os']:.2f}x xargs), libc posix_spawn without the GIL"
          f" {t['floor-libc']:.3f} s ({t['xargs'] / t['floor-libc']:.2f}x xargs);"
          f" after / libc floor {t['floor-libc'] / t['after']:.2f}x")
    print(f"mixed x{mixed_n:,}: xargs -P{n} {x['xargs']:.3f} s, before {x['before']:.3f} s,"
          f" after {x['after']:.3f} s")
    print(f"  after / xargs (tasks/s)  {x['xargs'] / x['after']:.2f}x"
          f"   before / xargs {x['xargs'] / x['before']:.2f}x"
          f"   after / before {x['before'] / x['after']:.2f}x")
    print(f"peak RSS: 1M after {m['after-1M']:.1f} MB, 1M before {m['before-1M']:.1f} MB,"
          f" 10k after {m['after-10k']:.1f} MB; after 1M / 10k {m['after-1M'] / m['after-10k']:.2f}x")


if __name__ == "__main__":
    main()
