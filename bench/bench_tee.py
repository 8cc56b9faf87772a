"""The tee path's throughput against `workload | tee FILE > /dev/null`, and the idle overhead.

    .venv/bin/python bench/bench_tee.py                  # defaults: 512 MiB x 3, under 2 min
    .venv/bin/python bench/bench_tee.py --size-mb 2048 --repeats 5 --idle-seconds 60
    .venv/bin/python bench/bench_tee.py --other-runner /path/to/patched/checkout

Producer (the same in every variant): a Python process that writes one prebuilt ~1 MiB block
of training-log lines (~95 bytes on average) with `sys.stdout.buffer.write` until SIZE is out.
It costs about nothing per byte, so it outruns both consumers: the `ceiling` row (the producer
into `cat > FILE` on tmpfs) shows its pace. Under the wrapper it waits for env_snapshot.json
before its first write, so the wrapper's start-up snapshot (which imports torch in a child
process when torch is installed) does not compete with the pump for a CPU.

Two figures per variant:
- MB/s: the producer's bytes over the time from its first write (a stamp it records) to the
  last write into the log file (the log's mtime): the same clock for tee and the wrapper;
- CPU s/GB: CPU seconds the consumer spent per GB (tee and its shell; the wrapper process,
  minus what it had used when the producer started, minus the producer's own CPU, from
  `wait4` rusage). Less sensitive to other load on the machine than MB/s.

Variants: `tee` (the baseline); the real wrapper, `python -m runner exec RUN_DIR` on a run dir
made the way `ops run submit` makes one, with (a) no secrets (chunk copy), (b) three secrets
in the per-run secret store (line mode, redaction on; one of them is printed once per block
and must come out redacted), (c) one `metrics_from_stdout` pattern that matches one line in
MATCH_EVERY (the records are checked).

Idle overhead: the wrapper around `sleep`, CPU seconds of the wrapper process alone (psutil
`cpu_times`, children excluded) over wall time, after its start-up work is done, at heartbeat
intervals of 5 s (the default) and 1 s, measured side by side.

Targets (issue 2): MB/s at least 0.8 of tee; idle under 1 % of one core.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import secrets as random_tokens
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import REPO, Sandbox, make_run_dir, median, start_wrapper, table

from runner import contract

MIB = 1 << 20
CANARY = "hf_benchCanary0123456789abcdef0123456789"  # secret #1, printed once per block
PATTERN = r"iter (?P<step>\d+): loss (?P<loss>[0-9.eE+-]+)"
TARGET_RATIO = 0.8
TARGET_IDLE_PCT = 1.0

# lines a training run prints, about 100 bytes on average
_TEMPLATES: list[Callable[[int, random.Random], str]] = [
    lambda i, r: (f"step {i} | loss {r.uniform(0.5, 4):.4f} | lr {r.uniform(1e-5, 6e-4):.2e}"
                  f" | grad_norm {r.uniform(0.1, 3):.3f} | tok/s {r.uniform(1e4, 3e5):,.0f}"),
    lambda i, r: (f"[2026-11-23 12:{i // 60 % 60:02d}:{i % 60:02d}] INFO trainer.py:"
                  f"{r.randint(100, 900)}: epoch {i // 5000} batch {i % 5000}/5000 "
                  f"data {r.uniform(0, 0.2):.3f}s compute {r.uniform(0.1, 0.5):.3f}s"),
    lambda i, r: (f"{i % 101:3d}%|{'#' * (i % 31):<30}| {i}/1000000 [{i % 60:02d}:"
                  f"{r.randint(0, 59):02d}<{r.randint(0, 59):02d}:00, {r.uniform(1, 30):.2f}it/s]"),
    lambda i, r: ("/opt/conda/lib/python3.11/site-packages/torch/utils/data/dataloader.py:558:"
                  " UserWarning: This DataLoader will create 16 worker processes in total."),
]


def log_block(match_every: int, seed: int = 0) -> tuple[bytes, int]:
    """About 1 MiB of log lines: the canary once, one `iter N: loss X` line in
    ``match_every``, the rest from _TEMPLATES. Returns the block and its matching lines."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    lines: list[bytes] = []
    size = matches = 0
    while size < MIB:
        i = len(lines)
        if i == 7:
            text = f"wandb: logging in with token {CANARY}"
        elif i % match_every == 0:
            text = (f"iter {i}: loss {rng.uniform(0.5, 4):.4f}, time "
                    f"{rng.uniform(50, 400):.2f}ms, mfu {rng.uniform(10, 60):.2f}%")
            matches += 1
        else:
            text = rng.choice(_TEMPLATES)(i, rng)
        lines.append(f"{text}\n".encode())
        size += len(lines[-1])
    return b"".join(lines), matches


PRODUCER = """\
import json, os, resource, sys, time
total, block_path, stamp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(block_path, "rb") as fh:
    block = fh.read()
run_dir = os.environ.get("OPS_RUN_DIR")
if run_dir:  # under the wrapper: start once its start-up snapshot is on disk
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(run_dir, "env_snapshot.json")):
        if time.time() > deadline:
            sys.exit("env_snapshot.json never appeared")
        time.sleep(0.01)
out = sys.stdout.buffer
started = time.time()
for _ in range(total // len(block)):
    out.write(block)
out.flush()
usage = resource.getrusage(resource.RUSAGE_SELF)
with open(stamp, "w") as fh:
    json.dump({"started": started, "cpu_s": usage.ru_utime + usage.ru_stime}, fh)
"""


@dataclass(frozen=True)
class Sample:
    mbps: float  # producer bytes / (first write .. last write into the log)
    cpu_s: float  # CPU seconds of the consumer (tee, or the wrapper) while it pumped


@dataclass
class Case:
    name: str
    what: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def mbps(self) -> float:
        return median([s.mbps for s in self.samples])

    def cpu_per_gb(self, size: int) -> float:
        return median([s.cpu_s for s in self.samples]) / (size / 1e9)


class TeeBench:
    def __init__(self, box: Sandbox, size_mb: int, match_every: int):
        self.box = box
        self.match_every = match_every
        block, self.matches_per_block = log_block(match_every)
        self.blocks = max(1, round(size_mb * MIB / len(block)))
        self.size = self.blocks * len(block)
        self.block = box.root / "block.log"
        self.block.write_bytes(block)
        self.producer = box.root / "producer.py"
        self.producer.write_text(PRODUCER)
        self.seq = 0

    def _producer_argv(self) -> tuple[list[str], Path]:
        self.seq += 1
        stamp = self.box.root / f"stamp-{self.seq}.json"
        return [str(self.producer), str(self.size), str(self.block), str(stamp)], stamp

    def shell(self, consumer: str, log_dir: Path | None = None) -> Sample:
        """The producer piped into `consumer`, a shell command; `{log}` is the log file."""
        argv, stamp = self._producer_argv()
        log = (log_dir or self.box.root) / f"tee-{self.box.root.name}-{self.seq}.log"
        producer = " ".join(_quote(a) for a in [sys.executable, *argv])
        proc = subprocess.Popen(["sh", "-c", f"{producer} | "
                                 + consumer.format(log=_quote(str(log)))])
        code, cpu_total = _reap(proc)
        assert code == 0, f"{consumer!r} exited with {code}"
        assert log.stat().st_size == self.size, "the consumer lost bytes"
        end_ns = log.stat().st_mtime_ns
        log.unlink()
        return _sample(self.size, stamp, end_ns, cpu_total)

    def wrapper(self, *, secrets: dict[str, str] | None = None,
                patterns: list[str] | None = None, runner_dir: Path = REPO) -> Sample:
        argv, stamp = self._producer_argv()
        preset: dict[str, Any] = {"kind": "command", "command": ["{python}", *argv]}
        if patterns:
            preset["metrics_from_stdout"] = [{"pattern": p} for p in patterns]
        run_dir = make_run_dir(self.box, f"tee-{self.seq}", preset, secrets=secrets)
        proc = start_wrapper(run_dir, runner_dir)
        _wait(lambda: (run_dir / contract.ENV_SNAPSHOT).exists() or proc.poll() is not None,
              300)
        if proc.returncode is not None:
            log = (run_dir / contract.WRAPPER_LOG).read_text(errors="replace")
            raise RuntimeError(f"the wrapper exited with {proc.returncode}:\n{log[-2000:]}")
        before = _cpu(proc.pid, children=True)  # start-up, snapshot probes: not the tee path
        code, cpu_total = _reap(proc)
        summary = contract.read_json(run_dir / contract.SUMMARY)
        assert code == 0 and summary["status"] == "completed", (code, summary.get("failure"))
        log = run_dir / contract.STDOUT_LOG
        sample = _sample(self.size, stamp, log.stat().st_mtime_ns, cpu_total - before)
        _check_log(log, self.size, redacted=bool(secrets))
        if patterns:
            records = contract.read_jsonl(run_dir / contract.METRICS).records
            assert len(records) == self.blocks * self.matches_per_block, len(records)
        _remove_tree(run_dir)
        return sample


def _sample(size: int, stamp: Path, end_ns: int, consumer_and_producer_cpu: float) -> Sample:
    producer = json.loads(stamp.read_text())
    stamp.unlink()
    return Sample(mbps=size / 1e6 / (end_ns / 1e9 - producer["started"]),
                  cpu_s=consumer_and_producer_cpu - producer["cpu_s"])


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for ``proc``; its exit code and the CPU seconds of it and every child it reaped."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _check_log(log: Path, size: int, *, redacted: bool) -> None:
    """Every byte arrived; with redaction on, the canary never did."""
    with open(log, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        has_canary = data.find(CANARY.encode()) >= 0
        if redacted:
            assert not has_canary, "a registered secret reached stdout.log"
            assert data.find(b"[REDACTED]") >= 0
        else:
            assert len(data) == size, f"stdout.log has {len(data)} bytes, expected {size}"


def _remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(path)], check=True)


# -- idle overhead ---------------------------------------------------------------------------
def idle_overhead(box: Sandbox, intervals: list[float],
                  window: float) -> dict[float, dict[str, float]]:
    """Start one wrapper around `sleep` per interval, side by side; measure steady-state CPU."""
    started: dict[float, tuple[Path, subprocess.Popen[bytes]]] = {}
    try:
        for interval in intervals:
            run_dir = make_run_dir(box, f"idle-{interval:g}s", {
                "kind": "command", "command": ["sleep", str(int(window * 3 + 60))],
                "limits": {"grace_sec": 1}}, interval_s=interval)
            started[interval] = (run_dir, start_wrapper(run_dir))
        for run_dir, _ in started.values():  # start-up work is over once the snapshot is out
            _wait(lambda d=run_dir: (d / contract.ENV_SNAPSHOT).exists(), 300)
        time.sleep(1.0)
        first = {i: (_cpu(p.pid), time.monotonic()) for i, (_, p) in started.items()}
        time.sleep(window)
        results = {}
        for interval, (run_dir, proc) in started.items():
            cpu0, t0 = first[interval]
            cpu1, t1 = _cpu(proc.pid), time.monotonic()
            beats = contract.read_json(run_dir / contract.HEARTBEAT)["seq"]
            results[interval] = {"pct": 100 * (cpu1 - cpu0) / (t1 - t0), "startup_cpu_s": cpu0,
                                 "wall_s": t1 - t0, "beats": beats}
    finally:
        for run_dir, proc in started.values():  # SIGTERM: the wrapper stops `sleep` and ends
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            _remove_tree(run_dir)
    return results


def _cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of ``pid`` itself, plus of the children it reaped when ``children``."""
    times = psutil.Process(pid).cpu_times()
    own = times.user + times.system
    return float(own + (times.children_user + times.children_system if children else 0.0))


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError("the wrapper did not finish starting")
        time.sleep(0.05)


# -- main --------------------------------------------------------------------------------------
def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=_positive, default=512,
                        help="MiB the producer writes per run (default 512)")
    parser.add_argument("--repeats", type=_positive, default=3, help="runs per variant (default 3)")
    parser.add_argument("--match-every", type=_positive, default=1000,
                        help="one line in N matches the metrics pattern (default 1000)")
    parser.add_argument("--idle-seconds", type=float, default=20.0,
                        help="idle measurement window (default 20)")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where logs and run dirs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--other-runner", type=Path, default=None, metavar="DIR",
                        help="also run a, b, c with the `runner` package found in DIR "
                             "(e.g. a checkout with a patched logpump.py)")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def throughput(bench: TeeBench, repeats: int, other: Path | None = None) -> list[Case]:
    secrets = {"HF_TOKEN": CANARY, "WANDB_API_KEY": random_tokens.token_hex(20),
               "S3_SECRET": random_tokens.token_urlsafe(30)}
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    cases: list[tuple[Case, Callable[[], Sample]]] = [
        (Case("ceiling", "producer | cat > FILE (tmpfs)"),
         lambda: bench.shell("cat > {log}", log_dir=shm)),
        (Case("tee", "producer | tee FILE > /dev/null"),
         lambda: bench.shell("tee {log} > /dev/null")),
        (Case("a", "wrapper, no secrets"), bench.wrapper),
        (Case("b", "wrapper, 3 secrets (line mode)"), lambda: bench.wrapper(secrets=secrets)),
        (Case("c", f"wrapper, metrics_from_stdout (1/{bench.match_every} lines)"),
         lambda: bench.wrapper(patterns=[PATTERN])),
    ]
    if other is not None:  # the same three with the runner of another checkout
        cases += [
            (Case("a'", f"as a, runner from {other}"), lambda: bench.wrapper(runner_dir=other)),
            (Case("b'", "as b, that runner"),
             lambda: bench.wrapper(secrets=secrets, runner_dir=other)),
            (Case("c'", "as c, that runner"),
             lambda: bench.wrapper(patterns=[PATTERN], runner_dir=other)),
        ]
    for _ in range(repeats):  # interleaved, so drift in the machine hits every variant alike
        for case, run in cases:
            case.samples.append(run())
    return [case for case, _ in cases]


def report(cases: list[Case], idle: dict[float, dict[str, float]] | None, size: int,
           repeats: int) -> str:
    tee = next(c for c in cases if c.name == "tee")
    rows = []
    for c in cases:
        base = c.name in ("ceiling", "tee")
        ratio, cpu_ratio = c.mbps / tee.mbps, tee.cpu_per_gb(size) / c.cpu_per_gb(size)
        rows.append([c.name, c.what, f"{c.mbps:,.0f}",
                     f"{min(s.mbps for s in c.samples):,.0f}-"
                     f"{max(s.mbps for s in c.samples):,.0f}",
                     "-" if base else f"{ratio:.2f}", f"{c.cpu_per_gb(size):.2f}",
                     "-" if base else f"{cpu_ratio:.2f}",
                     "" if base else ("ok" if ratio >= TARGET_RATIO else "MISS")])
    out = [f"tee path: {size / 1e6:,.0f} MB of log lines, median of {repeats} "
           f"({os.cpu_count()} CPUs)",
           table(rows, ["case", "what", "MB/s", "range", "vs tee", "CPU s/GB", "tee CPU/this",
                        f">={TARGET_RATIO}"], left=2)]
    if idle:
        rows = [[f"{i:g} s", f"{r['pct']:.3f} %", f"{r['wall_s']:.0f} s", f"{r['beats']:.0f}",
                 f"{r['startup_cpu_s']:.2f} s",
                 "ok" if r["pct"] < TARGET_IDLE_PCT else "MISS"] for i, r in idle.items()]
        out += ["", "wrapper CPU on an idle workload (sleep), steady state, % of one core",
                table(rows, ["heartbeat", "cpu", "window", "beats", "start-up cpu",
                             f"<{TARGET_IDLE_PCT:g} %"])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-tee-"))
    box = Sandbox(root.resolve())
    box.root.mkdir(parents=True, exist_ok=True)
    bench = TeeBench(box, args.size_mb, args.match_every)
    size = bench.size
    cases = throughput(bench, args.repeats, args.other_runner)
    idle = None if args.skip_idle else idle_overhead(box, [5.0, 1.0], args.idle_seconds)
    print(report(cases, idle, size, args.repeats))
    if args.json:
        args.json.write_text(json.dumps({
            "bytes": size, "repeats": args.repeats, "match_every": args.match_every,
            "cpu_count": os.cpu_count(),
            "throughput": {c.name: {"what": c.what, "mbps": [s.mbps for s in c.samples],
                                    "cpu_s": [s.cpu_s for s in c.samples]} for c in cases},
            "idle": {f"{k:g}": v for k, v in (idle or {}).items()}}, indent=2))
    if args.workdir is None:
        _remove_tree(box.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
