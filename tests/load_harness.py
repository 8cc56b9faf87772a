"""Run pytest several times under CPU load: busy processes started here and ended by pid.

    .venv/bin/python -m tests.load_harness --hogs 3 --runs 10 -- -m "tmux or ssh"

Prints one line per run (exit code, pass/fail counts, seconds) and a final tally. Not a test
module (pytest does not collect it): issue 15 asks that the tmux and ssh tiers pass under load.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time


def _hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.load_harness")
    parser.add_argument("--hogs", type=int, default=3, help="busy processes during the runs")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    extra = [a for a in args.pytest_args if a != "--"]
    hogs = [_hog() for _ in range(args.hogs)]
    failed_runs = 0
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   *extra], capture_output=True, text=True, check=False)
            tally = re.findall(r"\d+ (?:passed|failed|error|errors|skipped)",
                               proc.stdout.splitlines()[-1] if proc.stdout else "")
            failed_runs += proc.returncode != 0
            print(f"run {run}: rc={proc.returncode} {', '.join(tally)} "
                  f"in {time.monotonic() - started:.0f} s", flush=True)
            if proc.returncode != 0:
                print("\n".join(line for line in proc.stdout.splitlines()
                                if line.startswith(("FAILED", "ERROR"))), flush=True)
    finally:
        for hog in hogs:  # by pid, each one this harness started
            hog.kill()
            hog.wait()
    print(f"{args.runs - failed_runs}/{args.runs} runs passed under {args.hogs} busy processes")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
