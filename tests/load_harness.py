"""Run pytest several times under CPU load: busy processes started here and ended by pid.

    .venv/bin/python -m tests.load_harness --hogs 3 --runs 10 -- -n 2 -m "tmux or ssh"

Prints one line per run (exit code, pass/fail counts, seconds, passes in a row so far), the ids
of the tests that failed or errored in that run, and the path of a file that keeps the failing
run's whole output (stdout and stderr), so a flake that happens once in ten runs can be read
afterwards. Ends with a tally and the longest streak of passing runs. Not a test module (pytest
does not collect it): issue 15 asks that the tmux and ssh tiers pass 10 times in a row under load.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_TALLY = re.compile(r"\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed)")
_PROBLEM = re.compile(r"^(FAILED|ERROR) (\S+)")


@dataclass(frozen=True)
class RunResult:
    """What one pytest run left behind, as far as the tally needs it."""

    number: int
    returncode: int
    seconds: float
    tally: list[str]
    problems: list[str]  # "FAILED tests/x.py::test_y", one per failing or erroring test
    log: Path | None  # the kept output of a failing run


def problem_ids(output: str) -> list[str]:
    """The FAILED/ERROR lines of pytest's short summary, as 'KIND test-id' (the message dropped)."""
    found: list[str] = []
    for line in output.splitlines():
        match = _PROBLEM.match(line)
        if match and f"{match[1]} {match[2]}" not in found:
            found.append(f"{match[1]} {match[2]}")
    return found


def _tally(output: str) -> list[str]:
    for line in reversed(output.splitlines()):
        found = _TALLY.findall(line)
        if found:
            return found
    return []


def _hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_once(number: int, pytest_args: list[str], log_dir: Path) -> RunResult:
    """One pytest run; a failing run's whole output is kept in log_dir/run-NN.log."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *pytest_args],
        capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    log = None
    if proc.returncode != 0:
        log = log_dir / f"run-{number:02d}.log"
        log.write_text(f"$ pytest {' '.join(pytest_args)}\nrc={proc.returncode} in {seconds:.0f} s"
                       f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return RunResult(number, proc.returncode, seconds, _tally(proc.stdout),
                     problem_ids(proc.stdout), log)


def _report(result: RunResult, streak: int) -> None:
    print(f"run {result.number}: rc={result.returncode} {', '.join(result.tally)} "
          f"in {result.seconds:.0f} s; {streak} in a row", flush=True)
    for problem in result.problems:
        print(f"  {problem}", flush=True)
    if result.log is not None:
        print(f"  output kept in {result.log}", flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.load_harness")
    parser.add_argument("--hogs", type=int, default=3, help="busy processes during the runs")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where a failing run's output is kept (default: a new temp dir)")
    parser.add_argument("--stop-on-fail", action="store_true",
                        help="stop after the first failing run")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    extra = [a for a in args.pytest_args if a != "--"]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="load-harness-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.runs} runs of pytest {' '.join(extra)} under {args.hogs} busy processes; "
          f"failing runs kept in {log_dir}", flush=True)
    hogs = [_hog() for _ in range(args.hogs)]
    results: list[RunResult] = []
    streak = best = 0
    try:
        for number in range(1, args.runs + 1):
            result = run_once(number, extra, log_dir)
            results.append(result)
            streak = streak + 1 if result.returncode == 0 else 0
            best = max(best, streak)
            _report(result, streak)
            if result.returncode != 0 and args.stop_on_fail:
                break
    finally:
        for hog in hogs:  # by pid, each one this harness started
            hog.kill()
            hog.wait()
    passed = sum(r.returncode == 0 for r in results)
    print(f"{passed}/{len(results)} runs passed under {args.hogs} busy processes; "
          f"longest streak {best}; durations "
          f"{', '.join(f'{r.seconds:.0f}' for r in results)} s")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
