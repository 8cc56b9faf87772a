"""`ops report` over many run dirs, and over a host's runs through a real sshd, against what a
user would do instead.

    .venv/bin/python bench/bench_report.py                 # defaults: 10,000 local, 1,000 remote
    .venv/bin/python bench/bench_report.py --quick         # 1,000 local, 200 remote (~1 min)
    .venv/bin/python bench/bench_report.py --only local --runs 10000 --repeats 5

1. **Local, RUNS fetched run dirs** (default 10,000). One real run is made by the wrapper
   (`python -m runner exec`, a command printing 200 training lines, metrics_from_stdout), then
   cloned RUNS times (every contract file, its run id rewritten, the `lr` override varied over
   four values so one config key differs; one run in a hundred gets a corrupt summary.json,
   which the report must list as invalid). Timed as a user runs it, a fresh process each
   time: `python -m ops report ROOT --format table` against a naive script in the same
   interpreter that walks the root and `json.loads` every `.json` file (and every line of
   every `.jsonl` file) of every run, then prints one line per run. Wall time and peak RSS
   (from wait4) of each. First COLD_REPEATS (default 2) runs with `--no-cache` (every run dir
   read and its status derived); then one untimed run that fills the record cache
   (.ops/report-cache) and one naive warm-up; then REPEATS (default 5) alternating rounds of
   the cached report and the naive script; min, median, max. Targets (issue 10): ops under
   2 s and under 500 MB. The figures depend on the machine's load: it is printed with them.
2. **Remote, HOST_RUNS run dirs** (default 1,000) on a loopback sshd (the test suite's
   throwaway OpenSSH server; the "pod" is this machine, reached only through SSH): the report's
   gathering step, `sources.host_runs` on a connected target (one `runner report-data` round
   trip; the exec calls are counted and must be 1), against a naive client on the same
   paramiko connection that lists the root over SFTP and reads and parses every `.json` file
   of every run. Also the whole CLI `python -m ops report --host ALIAS --format table`.

Prints min/median/max and the ratios; exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import median, table
from bench_remote import TEMPLATE_ID, loopback_pod, template_run

from runner import contract

LOCAL_TARGET_S = 2.0
LOCAL_TARGET_MB = 500.0
LRS = (0.1, 0.03, 0.01, 0.003)
NAIVE = r"""
import json, os, sys
root = sys.argv[1]
rows = 0
for name in sorted(os.listdir(root)):
    run = os.path.join(root, name)
    docs = {}
    for dirpath, _dirs, files in os.walk(run):
        for fname in files:
            path = os.path.join(dirpath, fname)
            if fname.endswith(".json"):
                try:
                    with open(path, encoding="utf-8") as fh:
                        docs[fname] = json.load(fh)
                except ValueError:
                    docs[fname] = None
            elif fname.endswith(".jsonl"):
                with open(path, encoding="utf-8") as fh:
                    docs[fname] = [json.loads(line) for line in fh if line.strip()]
    summary = docs.get("summary.json") or {}
    print(name, summary.get("status"), summary.get("metrics_final"))
    rows += 1
print(rows, "runs", file=sys.stderr)
"""


def clone(template: Path, root: Path, count: int) -> int:
    """``count`` copies of the template with their own ids, lr varied, 1% corrupt. Written
    without fsync (a benchmark fixture, not a run)."""
    files = {p.relative_to(template).as_posix(): p.read_bytes()
             for p in template.rglob("*") if p.is_file()}
    old = TEMPLATE_ID.encode()
    root.mkdir(parents=True, exist_ok=True)
    corrupt = 0
    for i in range(count):
        run_id = f"train-20250101T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:05x}"
        run_dir = root / run_id
        (run_dir / "out").mkdir(parents=True)
        (run_dir / contract.CHECKPOINTS_DIR).mkdir()
        for rel, original in files.items():
            data = original.replace(old, run_id.encode())
            if rel == contract.CONFIG_EFFECTIVE:
                doc = json.loads(data)
                doc["config"]["overrides"]["lr"] = LRS[i % len(LRS)]
                data = contract.dumps(doc)
            if rel == contract.SUMMARY and i % 100 == 99:
                data, corrupt = data[: len(data) // 2], corrupt + 1
            path = run_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return corrupt


def measured(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of one fresh process, and its stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def spread(values: Sequence[float], unit: str = "s") -> str:
    fmt = (lambda v: f"{v:.2f}") if unit == "s" else (lambda v: f"{v:.0f}")
    return f"{fmt(min(values))} / {fmt(median(values))} / {fmt(max(values))} {unit}"


def project(work: Path, outputs: Path, hosts: dict[str, Any] | None = None) -> Path:
    root = work / "project"
    (root / "configs" / "ops").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "ops" / "project.json").write_text(json.dumps({
        "project": {"name": "bench-report", "remote_outputs_dir": str(outputs),
                    "ops_home": str(work / "ops-home")},
        "hosts": hosts or {}, "presets": {"noop": {"kind": "command", "command": ["true"]}}}))
    return root


def bench_local(work: Path, template: Path, count: int, repeats: int,
                cold_repeats: int) -> list[list[str]]:
    root = work / "runs"
    start = time.perf_counter()
    corrupt = clone(template, root, count)
    print(f"\n[1] local: {count} run dirs ({corrupt} with a corrupt summary.json) written in "
          f"{time.perf_counter() - start:.1f} s")
    proj = project(work, root)
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(proj / "configs/ops/project.json")}
    ops_argv = [sys.executable, "-m", "ops", "report", str(root), "--format", "table"]
    naive_argv = [sys.executable, "-c", NAIVE, str(root)]
    cold = [measured([*ops_argv, "--no-cache"], proj, env) for _ in range(cold_repeats)]
    check_table(cold[0][2], count, corrupt)
    _s, _m, text = measured(ops_argv, proj, env)  # fills the record cache
    check_table(text, count, corrupt)
    measured(naive_argv, proj, env)  # warm-up
    samples: dict[str, list[tuple[float, float]]] = {"ops": [], "naive": []}
    for _ in range(repeats):
        samples["ops"].append(measured(ops_argv, proj, env)[:2])
        samples["naive"].append(measured(naive_argv, proj, env)[:2])
    ops_t = [s for s, _ in samples["ops"]]
    ops_m = [m for _, m in samples["ops"]]
    naive_t = [s for s, _ in samples["naive"]]
    naive_m = [m for _, m in samples["naive"]]
    cold_t = [c[0] for c in cold]
    print(f"    ops report --format table, cached: {spread(ops_t)}, peak RSS "
          f"{spread(ops_m, 'MB')}")
    print(f"    ops report --format table --no-cache (every run read): {spread(cold_t)}, "
          f"peak RSS {spread([c[1] for c in cold], 'MB')}")
    print(f"    naive json.loads of every file: {spread(naive_t)}, peak RSS "
          f"{spread(naive_m, 'MB')}")
    print(f"    ratio ops/naive (median): cached {median(ops_t) / median(naive_t):.2f}, "
          f"no cache {median(cold_t) / median(naive_t):.2f}; RSS "
          f"{median(ops_m) / median(naive_m):.2f}")
    met_t = median(ops_t) < LOCAL_TARGET_S
    met_m = max(ops_m + [c[1] for c in cold]) < LOCAL_TARGET_MB
    return [[f"report, {count} local runs (table, cached)", f"{median(ops_t):.2f} s",
             f"{median(naive_t):.2f} s", f"{median(ops_t) / median(naive_t):.2f}",
             f"< {LOCAL_TARGET_S:g} s", "yes" if met_t else "NO"],
            [f"report, {count} local runs (--no-cache)", f"{median(cold_t):.2f} s",
             f"{median(naive_t):.2f} s", f"{median(cold_t) / median(naive_t):.2f}", "-", "-"],
            [f"report, {count} local runs: peak RSS", f"{max(ops_m):.0f} MB",
             f"{max(naive_m):.0f} MB", f"{max(ops_m) / max(naive_m):.2f}",
             f"< {LOCAL_TARGET_MB:g} MB", "yes" if met_m else "NO"]]


def check_table(text: str, count: int, corrupt: int) -> None:
    lines = text.split("\n\n", 1)[0].splitlines()
    if len(lines) != count + 1 or "overrides.lr" not in lines[0]:
        raise RuntimeError(f"the report table has {len(lines) - 1} rows for {count} runs")
    invalid = sum(1 for line in lines[1:] if line.split()[1] == "invalid")
    if invalid != corrupt:
        raise RuntimeError(f"{invalid} invalid rows, expected {corrupt}")


def naive_sftp(target: Any) -> int:
    """List the root over SFTP and read + parse every .json file of every run."""
    sftp = target.host.sftp()
    root = target.paths.outputs_root
    seen = 0
    for name in sorted(sftp.listdir(root)):
        for fname in sftp.listdir(f"{root}/{name}"):
            if fname.endswith(".json"):
                with sftp.open(f"{root}/{name}/{fname}", "rb") as fh, \
                        contextlib.suppress(ValueError):
                    json.loads(fh.read())
        seen += 1
    return seen


class CountingHost:
    def __init__(self, host: Any) -> None:
        self.host, self.name, self.calls = host, host.name, 0

    def exec(self, argv: Sequence[str], **kwargs: Any) -> Any:
        self.calls += 1
        return self.host.exec(argv, **kwargs)

    def runner_argv(self) -> list[str]:
        return list(self.host.runner_argv())


def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def bench_remote(work: Path, template: Path, count: int, repeats: int) -> list[list[str]]:
    from ops.config.loader import load_config
    from ops.report import sources
    from ops.services.hosts import open_target
    from ops.services.runs import Target
    from runner.report_data import Want

    (work / "pod").mkdir(parents=True)
    with loopback_pod(work / "pod") as pod:
        corrupt = clone(template, pod.outputs, count)
        print(f"\n[2] remote: {count} run dirs on the loopback sshd ({corrupt} corrupt)")
        target = open_target(load_config(pod.config_path), pod.alias)
        try:
            counting = CountingHost(target.host)
            counted = Target(counting, target.paths)  # type: ignore[arg-type]
            gathered = sources.host_runs(counted, [], Want())  # warm-up and check
            if len(gathered.runs) != count or counting.calls != 1:
                raise RuntimeError(f"{len(gathered.runs)} runs in {counting.calls} calls")
            ops_s = [timed(lambda: sources.host_runs(counted, [], Want()))
                     for _ in range(repeats)]
            if counting.calls != 1 + repeats:
                raise RuntimeError(f"{counting.calls} host calls for {1 + repeats} reports")
            naive_sftp(target)
            naive_s = [timed(lambda: naive_sftp(target)) for _ in range(max(1, repeats - 2))]
        finally:
            target.close()
        cli_s = [measured([sys.executable, "-m", "ops", "report", "--host", pod.alias],
                          pod.project, pod.env())[0] for _ in range(3)]
    print(f"    report-data, one round trip: {spread(ops_s)}")
    print(f"    naive SFTP, every .json of every run: {spread(naive_s)}")
    print(f"    CLI `ops report --host` (fresh process, connect included): {spread(cli_s)}")
    ratio = median(naive_s) / median(ops_s)
    print(f"    ratio naive/ops (median): {ratio:.1f}x")
    return [[f"report --host, {count} runs (one round trip)", f"{median(ops_s):.2f} s",
             f"{median(naive_s):.2f} s", f"{median(ops_s) / median(naive_s):.2f}", "1 call",
             "yes"],
            [f"report --host, {count} runs: CLI end to end", f"{median(cli_s):.2f} s",
             f"{median(naive_s):.2f} s", f"{median(cli_s) / median(naive_s):.2f}", "-", "-"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="local run dirs")
    parser.add_argument("--host-runs", type=int, default=1_000, help="run dirs on the sshd")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-repeats", type=int, default=2,
                        help="runs of the uncached report (slow: every file read)")
    parser.add_argument("--quick", action="store_true", help="1,000 local, 200 remote")
    parser.add_argument("--only", choices=("local", "remote"), action="append")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.host_runs, args.repeats = 1000, 200, 3
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ops-bench-report-") as tmp:
        work = Path(tmp)
        template = template_run(work)
        if not args.only or "local" in args.only:
            rows += bench_local(work / "local", template, args.runs, args.repeats,
                                args.cold_repeats)
        if not args.only or "remote" in args.only:
            rows += bench_remote(work / "remote", template, args.host_runs, args.repeats)
    print()
    print(table(rows, ["measure", "ops", "baseline", "ops/baseline", "target", "met"]))
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} CPUs")
    return 0 if all(r[-1] != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
