"""Remote commands over a real sshd on 127.0.0.1: status, fetch and submit against what a user
would do instead.

    .venv/bin/python bench/bench_remote.py                 # defaults: ~2-2.5 min on 2 cores
    .venv/bin/python bench/bench_remote.py --quick         # small sizes, a smoke run (~40 s)
    .venv/bin/python bench/bench_remote.py --size-mb 2000 --fetch-repeats 5 --json out.json

The "pod" is this machine: the benchmark starts the test suite's throwaway OpenSSH sshd on
127.0.0.1 (its own host and user keys in a temp dir) and points HOME at a temp dir whose
~/.ssh/config holds an alias for it; ops (paramiko), ssh, scp and rsync all reach it through
that alias. The project is a temp git repo whose project.json names the alias as a host (its
outputs and ops home in temp dirs, `python` = this interpreter, so no venv is made there).

1. **Status of RUNS finished runs** (default 1,000). One real run is made by the wrapper
   (`python -m runner exec`, a command printing training lines, metrics_from_stdout), then
   cloned RUNS times under the host's outputs root with its run id rewritten (the JSON files
   re-checked against their schema tags and written with `contract.dumps`, without fsync).
   Timed on one connected target with the runner bootstrapped: `runs.list_runs(target)` (one
   round trip; one untimed warm-up, median of 5) against a naive client on the same paramiko
   connection: SFTP `listdir` of the root, then open/read/parse summary.json and
   heartbeat.json of every run (2 x RUNS SFTP reads; one warm-up, median of 3). Also, for
   information: the whole CLI `python -m ops run status --host ALIAS --json` (median of 3),
   the same in-process on a fresh connection split into connect, runner check and list_runs,
   and one bare exec round trip (`true`), which includes the host login shell's start-up.
   Target (issue 3): under 1 s on loopback.
2. **Fetch** of a run dir (a copy of the real run) plus SMALL files of 1-20 KB under out/
   (default 2,000) and one SIZE MB checkpoint (default 500) under checkpoints/, into an empty
   dir each time: `open_target` + `fetch.fetch(..., with_checkpoints=True)` (the ssh
   connection and runner check inside the timing, as scp and rsync pay for their ssh start)
   against `scp -r` and `rsync -a` over `ssh -F CONFIG ALIAS`. The tools take turns, one
   warm-up round then median of REPEATS (default 3; fewer if the warm-up round shows they
   would take more than FETCH_BUDGET_S); the page cache cannot be dropped, so the source is
   warm for all of them, and `sync` runs between tools. The `fetch()` call alone (without
   the connect) is reported too. Every copy is checked (file count and bytes), and kept
   until the end while the disk has room (bench/fetch_cost.py: a tool that runs right after
   2,000 files were deleted pays ext4 up to 2 s for it). CPU seconds on the laptop and the
   pod side and SSH sessions per fetch are printed too: steadier than wall times.
   Target: ops within 1.5x of the faster of scp and rsync.
3. **Submit latency** on a warm host with unchanged code: `python -m ops run submit --preset
   noop --host ALIAS --json` as a user runs it (a fresh process each time) after one warm-up
   submit that synced the code; median of SUBMITS (default 5). Each run is let finish before
   the next submit (its wrapper imports torch for the env snapshot when torch is installed,
   which would otherwise compete for the CPU). The same in-process (load_config, connect,
   runner check, submit.submit), with the code sync (a no-op) timed apart, and `python -c
   "import ops.cli.main, ops.hosts.ssh"` show where the time goes.
   Target: under 2 s.

Exit status 1 when a target is missed. The sshd, its connections and the tmux server of the
submitted runs are stopped at the end; everything lives in one temp dir, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import REPO, Sandbox, make_run_dir, median, start_wrapper, table
from fetch_cost import Cost, CostMeter, KeptCopies, pinned_runner_build

from ops.config.loader import LoadedConfig, load_config
from ops.hosts.mux import control_dir
from ops.hosts.ssh import open_host
from ops.services import fetch as fetch_service
from ops.services import runs, submit
from ops.services.bootstrap import ensure_runner
from ops.services.hosts import open_target
from ops.services.runs import Target
from ops.services.spec import HostPaths
from runner import contract

ALIAS = "ops-bench-pod"
PRESET = "noop"
TEMPLATE_ID = "train-20250101T000000-tmpl"
STATUS_TARGET_S = 1.0
FETCH_TARGET_RATIO = 0.9  # issue 14: <= 0.9x rsync -a, in every measured round
SUBMIT_TARGET_RTTS = 2.0  # issue 14: warm submit <= 2x one bare round trip
STATUS_TARGET_RTTS = 2.0  # issue 14: status <= 2x a round trip + the listing's own work
VERSION_TARGET_S = 0.1
OVERHEAD_TARGET_S = 0.15
# what `ops run status|submit` imports before it talks to the host
OVERHEAD_IMPORTS = ("import ops.cli.main as m; m.get_cli().get_command(None, 'run'); "
                    "import ops.services.target, ops.hosts.ssh")
FETCH_BUDGET_S = 150.0  # measured fetch rounds beyond this are dropped (median of fewer)
OPS = "ops: open_target + fetch()"
OPS_FETCH_ONLY = "ops: of which fetch()"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
# what the template run's workload prints: a short, realistic training log
TRAIN_PROGRAM = """\
import sys, time
for step in range(1, 201):
    print(f"[2025-01-01 00:00:{step % 60:02d}] iter {step}: loss {2.0 / step:.5f} lr 3e-4")
    if step % 50 == 0:
        print(f"epoch {step // 50} done, val_loss {1.5 / step:.5f}", flush=True)
"""


# -- setup -----------------------------------------------------------------------------------


@dataclass
class Pod:
    """Everything the three benchmarks share: the sshd, the alias, the project, the dirs."""

    work: Path
    alias: str
    ssh_argv: list[str]  # ssh -F CONFIG -o ... (without the destination)
    project: Path
    outputs: Path  # the host's outputs root (project.json hosts.<alias>.outputs_dir)
    ops_home: Path
    socket: str  # the tmux socket the submitted runs use

    @property
    def config_path(self) -> Path:
        return self.project / "configs" / "ops" / "project.json"

    def load(self) -> LoadedConfig:
        return load_config(self.config_path)

    def env(self) -> dict[str, str]:
        """For the `ops` processes timed here: bytecode from a private PYTHONPYCACHEPREFIX,
        written by the first of them. With PYTHONDONTWRITEBYTECODE=1 (as in a CI shell), every
        module edited since its .pyc was written would be compiled again by every process,
        which no installed copy of ops does."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**env, "OPS_PROJECT_CONFIG": str(self.config_path),
                "PYTHONPYCACHEPREFIX": str(self.work / "pyc")}


def hermetic_home(work: Path) -> Path:
    """HOME and the XDG dirs in the temp dir (paramiko reads ~/.ssh/config from $HOME); no
    agent, no outside project config."""
    home = work / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        os.environ[name] = str(home / f".{name.lower()}")
    for name in ("OPS_PROJECT_CONFIG", "SSH_AUTH_SOCK", "TMUX"):
        os.environ.pop(name, None)
    return home


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env={**os.environ, **GIT_ENV}).stdout


def make_project(work: Path, alias: str) -> Pod:
    """A temp git repo (committed, clean) whose project.json has the alias as a host."""
    project = work / "project"
    pod = Pod(work, alias, [], project, work / "pod-runs", work / "pod-home",
              f"opsbench{os.getpid()}")
    pod.config_path.parent.mkdir(parents=True)
    doc = {"project": {"name": "bench-remote", "remote_outputs_dir": str(pod.outputs),
                       "ops_home": str(pod.ops_home)},
           "tmux": {"socket": pod.socket, "watch_interval_sec": 5},
           "hosts": {alias: {"address": alias, "outputs_dir": str(pod.outputs),
                             "ops_home": str(pod.ops_home), "python": sys.executable,
                             "connect_retry_sec": 5}},
           "presets": {PRESET: {"kind": "command", "command": ["echo", "hello"],
                                "limits": {"grace_sec": 1}}}}
    pod.config_path.write_text(json.dumps(doc, indent=2))
    (project / ".gitignore").write_text("/.ops/\n/artifacts/\n/runs/\n")
    (project / "README.md").write_text("bench project\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "initial")
    return pod


@contextmanager
def loopback_pod(work: Path) -> Iterator[Pod]:
    """The sshd of the test suite on 127.0.0.1, an alias for it, and the project."""
    sys.path.insert(0, str(REPO))
    from tests.sshd_fixture import start_sshd, write_alias

    home = hermetic_home(work)
    server = start_sshd(work / "sshd")
    pod: Pod | None = None
    try:
        alias = write_alias(server, home, ALIAS)
        pod = make_project(work, alias.name)
        pod.ssh_argv = alias.ssh_argv()[:-1]
        yield pod
    finally:
        if pod is not None:
            subprocess.run(["tmux", "-L", pod.socket, "kill-server"], capture_output=True,
                           check=False)
        server.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def template_run(work: Path) -> Path:
    """One finished run dir, made by the real wrapper (every contract file as it really is)."""
    box = Sandbox(work / "template")
    preset = {"kind": "command", "command": [sys.executable, "-c", TRAIN_PROGRAM],
              "metrics_from_stdout": [{"pattern": r"iter (?P<step>\d+): loss (?P<loss>[0-9.]+)"}],
              "best": {"loss": "min"}, "limits": {"grace_sec": 1}}
    run_dir = make_run_dir(box, TEMPLATE_ID, preset, interval_s=1.0)
    proc = start_wrapper(run_dir)
    proc.wait(120)
    summary = contract.read_runner_summary(run_dir)
    if summary is None or summary.get("status") != "completed":
        raise RuntimeError(f"the template run did not complete: {summary}\n"
                           f"{(run_dir / contract.WRAPPER_LOG).read_text()}")
    return run_dir


def clone_runs(template: Path, root: Path, count: int) -> list[str]:
    """``count`` copies of the template under ``root``, each with its own run id."""
    files = {p.relative_to(template).as_posix(): p.read_bytes()
             for p in template.rglob("*") if p.is_file()}
    old = TEMPLATE_ID.encode()
    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        run_id = contract.validate_run_id(
            f"train-20250101T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:04x}")
        run_dir = root / run_id
        run_dir.mkdir()
        for rel, original in files.items():
            data = original.replace(old, run_id.encode())
            name = contract.JSON_FILES.get(rel)
            if name is not None:  # a contract JSON file: still ours after the rewrite?
                doc = json.loads(data)
                problem = contract.check_schema_tag(doc, name)
                if problem:
                    raise RuntimeError(f"{rel}: {problem}")
                data = contract.dumps(doc)
            path = run_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        ids.append(run_id)
    return ids


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- 1. status -------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the final table."""

    name: str
    ops: str
    baseline: str
    ratio: str
    target: str
    met: bool | None

    def cells(self) -> list[str]:
        return [self.name, self.ops, self.baseline, self.ratio, self.target,
                "-" if self.met is None else ("yes" if self.met else "NO")]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def naive_status(target: Target) -> int:
    """What a tool without a host-side helper does: list the root, then read each run's
    summary.json and heartbeat.json over SFTP (same connection). Returns runs seen."""
    sftp = target.host.sftp()  # type: ignore[attr-defined]
    root = target.paths.outputs_root
    seen = 0
    for name in sorted(sftp.listdir(root)):
        if not contract.RUN_ID_RE.fullmatch(name):
            continue
        for fname in (contract.SUMMARY, contract.HEARTBEAT):
            try:
                with sftp.open(f"{root}/{name}/{fname}", "rb") as fh:
                    json.loads(fh.read())
            except FileNotFoundError:
                continue
        seen += 1
    return seen


def connect_timed(pod: Pod, loaded: LoadedConfig, phases: dict[str, float]) -> Target:
    """open_target in two timed steps: the SSH connection, then the runner check
    (`ensure_runner`: one probe exec on a warm host)."""
    start = time.perf_counter()
    target = open_target(loaded, pod.alias, need_runner=False)
    host: Any = target.host
    if not host._use_mux():  # the shared OpenSSH master, else paramiko: connected now
        host.transport  # noqa: B018 - connects now
    phases["connect"] = time.perf_counter() - start
    python = loaded.config.hosts[pod.alias].python
    phases["runner check"], _ = timed(
        lambda: ensure_runner(target.host, target.paths.ops_home,  # type: ignore[arg-type]
                              python=python))
    return target


def in_process_status(pod: Pod) -> dict[str, float]:
    phases: dict[str, float] = {}
    start = time.perf_counter()
    target = connect_timed(pod, pod.load(), phases)
    try:
        phases["list_runs"], _ = timed(lambda: runs.list_runs(target))
    finally:
        target.close()
    phases["total"] = time.perf_counter() - start
    return phases


def exec_round_trip(pod: Pod) -> float:
    """One bare exec round trip (`true`, the host's login shell included) on a connection
    that is already open: the floor every remote command pays. The faster of the two
    transports (the shared OpenSSH master, paramiko), median of 7 each."""
    floors = []
    for multiplex in (True, False):
        host = open_host(pod.alias, repo_root=pod.project, multiplex=multiplex)
        try:
            host.exec(["true"])
            floors.append(median([timed(lambda h=host: h.exec(["true"]))[0]  # type: ignore[misc]
                                  for _ in range(7)]))
        finally:
            host.close()
    print(f"    bare exec `true` on an open connection: OpenSSH master {ms(floors[0])}, "
          f"paramiko {ms(floors[1])}")
    return min(floors)


def listing_work(pod: Pod) -> float:
    """What the listing itself costs on the host, without SSH: the runner's status verb run
    there directly (interpreter start-up included), once."""
    argv = [sys.executable, "-m", "runner", "status", str(pod.outputs)]
    return timed(lambda: subprocess.run(argv, capture_output=True, check=True, cwd=REPO))[0]


def bench_status(pod: Pod, template: Path, count: int, repeats: int,
                 results: Results) -> None:
    made, _ = timed(lambda: clone_runs(template, pod.outputs, count))
    print(f"\n[1] status: {count} finished run dirs written in {made:.1f} s "
          f"(template {TEMPLATE_ID}, {sum(1 for _ in template.rglob('*'))} entries)")
    loaded = pod.load()
    connect_s, target = timed(lambda: open_target(loaded, pod.alias))
    try:
        print(f"    connect + runner bootstrap (first, uploads the runner): {connect_s:.2f} s")
        found = runs.list_runs(target)  # warm-up
        statuses = {r["status"] for r in found}
        if len(found) != count or statuses != {"completed"}:
            raise RuntimeError(f"list_runs: {len(found)} runs, statuses {statuses}")
        ops_s = [timed(lambda: runs.list_runs(target))[0] for _ in range(repeats)]
        if naive_status(target) != count:  # warm-up and check
            raise RuntimeError("naive status did not see every run")
        naive_s = [timed(lambda: naive_status(target))[0] for _ in range(max(1, repeats - 2))]
    finally:
        target.close()
    cli_s: list[float] = []
    cli_execs: list[str] = []
    works: list[float] = []
    # the CLI and the listing's own work take turns, so that both medians see the same load
    # (measured apart, a slow minute for one of them moved the ratio by 0.3)
    argv = [sys.executable, "-m", "ops", "run", "status", "--host", pod.alias, "--json"]
    # one unmeasured run writes the bytecode every later one reads (Pod.env)
    subprocess.run(argv, cwd=pod.project, env=pod.env(), capture_output=True, check=True)
    for _ in range(max(3, repeats)):
        before = trips_so_far(pod)
        seconds, proc = timed(lambda: subprocess.run(
            argv, cwd=pod.project, env=pod.env(), capture_output=True, text=True, check=False))
        if proc.returncode != 0 or len(json.loads(proc.stdout)["runs"]) != count:
            raise RuntimeError(f"ops run status failed: {proc.stderr}")
        cli_s.append(seconds)
        cli_execs.append(trips_since(pod, before))
        works.append(listing_work(pod))
    inproc = [in_process_status(pod) for _ in range(3)]
    exec_s = exec_round_trip(pod)
    work_s = median(works)
    ops_m, naive_m, cli_m = median(ops_s), median(naive_s), median(cli_s)
    print(f"    list_runs (one round trip, warm): {', '.join(ms(s) for s in ops_s)}"
          f" -> median {ms(ops_m)}")
    print(f"    naive SFTP, {2 * count} file reads: {', '.join(ms(s) for s in naive_s)}"
          f" -> median {ms(naive_m)}  ({naive_m / ops_m:.1f}x slower than ops)")
    print(f"    CLI `ops run status --json`, fresh process: {', '.join(ms(s) for s in cli_s)}"
          f" -> median {ms(cli_m)}; round trips each, execs+resident runner (sshd log): "
          f"{cli_execs}")
    print("    the same in-process, fresh connection (median of 3): " + ", ".join(
        f"{key} {ms(median([p[key] for p in inproc]))}" for key in inproc[0]))
    print(f"    one bare exec round trip (`true`, the host's login shell included): "
          f"median {ms(exec_s)}; the listing's own work on the host, between the CLI runs: "
          f"{', '.join(ms(s) for s in works)} -> median {ms(work_s)}")
    results.raw["status"] = {"runs": count, "list_runs_s": ops_s, "naive_sftp_s": naive_s,
                             "cli_s": cli_s, "in_process_s": inproc, "exec_true_s": exec_s,
                             "first_connect_s": connect_s, "listing_work_s": works}
    results.raw["rtt_s"] = exec_s
    budget = STATUS_TARGET_RTTS * exec_s + work_s
    results.rows += [
        Row(f"status, {count} runs: list_runs (warm)", ms(ops_m),
            f"SFTP x{2 * count}: {ms(naive_m)}", f"{ops_m / naive_m:.3f}",
            f"< {STATUS_TARGET_S:g} s", ops_m < STATUS_TARGET_S),
        Row(f"status, {count} runs: CLI end to end", ms(cli_m),
            f"RTT {ms(exec_s)} + work {ms(work_s)}", f"{cli_m / budget:.2f} of budget",
            f"<= {STATUS_TARGET_RTTS:g}xRTT+work = {ms(budget)}", cli_m <= budget),
    ]


# -- 2. fetch --------------------------------------------------------------------------------


def make_fetch_run(template: Path, root: Path, small: int, size_mb: int) -> tuple[str, int, int]:
    """A copy of the real run plus ``small`` files of 1-20 KB and one ``size_mb`` checkpoint.
    Returns (run id, files, bytes)."""
    run_id = "fetch-20250101T000000-big0"
    run_dir = root / run_id
    shutil.copytree(template, run_dir)
    rng = random.Random(3)  # noqa: S311 - file contents, not cryptography
    small_dir = run_dir / "out" / "samples"
    small_dir.mkdir(parents=True)
    for i in range(small):
        (small_dir / f"sample_{i:05d}.json").write_bytes(rng.randbytes(rng.randint(1024,
                                                                                   20 * 1024)))
    ckpt = run_dir / contract.CHECKPOINTS_DIR
    ckpt.mkdir(exist_ok=True)
    block = rng.randbytes(8 << 20)
    left = size_mb << 20
    with open(ckpt / "last.pt", "wb") as fh:
        while left > 0:
            left -= fh.write(block[:left])
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    return run_id, len(files), sum(p.stat().st_size for p in files)


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and ".ops" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


@dataclass
class FetchTools:
    """The three ways to copy the run dir into an empty ``dest``; each leaves dest/RUN_ID."""

    pod: Pod
    loaded: LoadedConfig
    root: Path  # the host dir holding the run dir
    run_id: str
    fetch_only_s: float = 0.0  # of the last ops fetch: fetch() alone, without the connect

    def ops(self, dest: Path) -> None:
        target = open_target(self.loaded, self.pod.alias)
        try:
            target = Target(target.host, HostPaths(str(self.root), target.paths.ops_home))
            start = time.perf_counter()
            fetch_service.fetch(target, self.run_id, dest, with_checkpoints=True)
            self.fetch_only_s = time.perf_counter() - start
        finally:
            target.close()

    def scp(self, dest: Path) -> None:
        subprocess.run(["scp", "-q", "-r", *self.pod.ssh_argv[1:],
                        f"{self.pod.alias}:{self.root}/{self.run_id}", f"{dest}/"],
                       check=True, capture_output=True)

    def rsync(self, dest: Path) -> None:
        subprocess.run(["rsync", "-a", "-e", " ".join(self.pod.ssh_argv),
                        f"{self.pod.alias}:{self.root}/{self.run_id}/", f"{dest}/{self.run_id}/"],
                       check=True, capture_output=True)


def fetch_rounds(tools: FetchTools, expected: tuple[int, int], repeats: int,
                 work: Path, budget_s: float = FETCH_BUDGET_S, *,
                 costs: dict[str, list[Cost]] | None = None) -> dict[str, list[float]]:
    """One warm-up round, then ``repeats`` measured rounds (fewer when the warm-up shows they
    would not fit the budget); the tools take turns within a round. ``costs`` gets each
    measured fetch's CPU seconds (laptop, pod) and SSH sessions."""
    by_name: dict[str, Callable[[Path], None]] = {OPS: tools.ops, "scp -r": tools.scp,
                                                  "rsync -a": tools.rsync}
    samples: dict[str, list[float]] = {name: [] for name in [*by_name, OPS_FETCH_ONLY]}
    meter = CostMeter(tools.pod.work / "sshd", str(control_dir(tools.pod.project) or "-M"))
    keeps = KeptCopies(work)
    round_no = 0
    while round_no <= repeats:
        round_started = time.perf_counter()
        for name, tool in by_name.items():
            dest = work / f"{round_no}-{name.split()[0]}"
            dest.mkdir(parents=True)
            before = meter.now()
            start = time.perf_counter()
            tool(dest)
            seconds = time.perf_counter() - start
            cost = meter.now() - before
            got = tree_size(dest / tools.run_id)
            if got != expected:
                raise RuntimeError(f"{name} fetched {got}, expected {expected}")
            if round_no:
                samples[name].append(seconds)
                if costs is not None:
                    costs.setdefault(name, []).append(cost)
                if name == OPS:
                    samples[OPS_FETCH_ONLY].append(tools.fetch_only_s)
            kept = keeps.keep(dest, expected[1])
            if not kept:
                shutil.rmtree(dest)
            os.sync()  # the next tool does not pay for this one's writeback
            if kept:
                keeps.evict(dest)
        if round_no == 0:
            warm_up = time.perf_counter() - round_started
            fits = max(1, int(budget_s / warm_up))
            if fits < repeats:
                print(f"    warm-up round took {warm_up:.0f} s: {fits} measured round(s) "
                      f"instead of {repeats} (budget {budget_s:.0f} s)")
                repeats = fits
        round_no += 1
    keeps.remove()
    return samples


def bench_fetch(pod: Pod, template: Path, results: Results, *, small: int, size_mb: int,
                repeats: int, budget_s: float = FETCH_BUDGET_S) -> None:
    root = pod.work / "pod-fetch"
    made, (run_id, n_files, n_bytes) = timed(lambda: make_fetch_run(template, root, small,
                                                                    size_mb))
    print(f"\n[2] fetch: {run_id}: {n_files} files, {n_bytes / 1e6:.0f} MB "
          f"(made in {made:.1f} s)")
    tools = FetchTools(pod, pod.load(), root, run_id)
    costs: dict[str, list[Cost]] = {}
    with pinned_runner_build():  # the shared tree's runner/ may change while this runs
        samples = fetch_rounds(tools, (n_files, n_bytes), repeats, pod.work / "fetched",
                               budget_s, costs=costs)
    mids = {name: median(values) for name, values in samples.items()}
    for name, values in samples.items():
        print(f"    {name:28} {', '.join(f'{s:.2f}' for s in values)} s -> median "
              f"{mids[name]:.2f} s ({n_bytes / 1e6 / mids[name]:.0f} MB/s)")
    print("    CPU seconds (median; steadier than wall time on a loaded machine), SSH sessions:")
    for name, spent in costs.items():
        print(f"    {name:28} laptop {median([c.laptop_s for c in spent]):.2f} s, pod "
              f"{median([c.pod_s for c in spent]):.2f} s, "
              f"{median([float(c.sessions) for c in spent]):g} session(s) a fetch; by round "
              f"(laptop+pod s/sessions): "
              f"{', '.join(f'{c.laptop_s + c.pod_s:.1f}/{c.sessions}' for c in spent)}")
    baseline = f"scp {mids['scp -r']:.2f} s / rsync {mids['rsync -a']:.2f} s"
    results.raw["fetch"] = {"files": n_files, "bytes": n_bytes, "samples_s": samples,
                            "cost": {name: [vars(c) for c in spent]
                                     for name, spent in costs.items()}}
    # issue 14: against rsync -a, round by round (the tools took turns within a round)
    per_round = [o / r for o, r in zip(samples[OPS], samples["rsync -a"], strict=True)]
    print(f"    ops / rsync -a per round: {', '.join(f'{r:.2f}' for r in per_round)}")
    for name, label in ((OPS, "connect + fetch"), (OPS_FETCH_ONLY, "fetch() alone")):
        ratio = mids[name] / mids["rsync -a"]
        worst = max(per_round) if name == OPS else ratio
        results.rows.append(Row(f"fetch {n_files} files/{n_bytes / 1e6:.0f} MB: {label}",
                                f"{mids[name]:.2f} s", baseline,
                                f"{ratio:.2f} vs rsync (worst round {worst:.2f})",
                                f"<= {FETCH_TARGET_RATIO:g}x rsync -a, every round",
                                worst <= FETCH_TARGET_RATIO))


# -- 3. submit -------------------------------------------------------------------------------


def wait_finished(pod: Pod, run_id: str) -> None:
    summary = pod.outputs / run_id / contract.SUMMARY
    wait_for(summary.exists, 120, f"{run_id} to finish")


def trips_so_far(pod: Pod) -> tuple[int, int]:
    """(commands the sshd has started, from its log; requests the resident runner answered,
    from its own log beside its socket), one line each."""
    from ops.hosts.served import serve_dirs

    log = (pod.work / "sshd" / "sshd.log").read_text(errors="replace")
    served = sum(len(f.read_bytes().splitlines()) for place in serve_dirs(str(pod.ops_home))
                 for f in Path(place).glob("*.sock.log"))
    return log.count("Starting session: command"), served


def trips_since(pod: Pod, before: tuple[int, int]) -> str:
    """`E+F`: execs and resident-runner requests since ``before``."""
    now = trips_so_far(pod)
    return f"{now[0] - before[0]}+{now[1] - before[1]}"


def trips(text: str) -> int:
    return sum(int(n) for n in text.split("+"))


def cli_submit(pod: Pod) -> tuple[float, str]:
    seconds, proc = timed(lambda: subprocess.run(
        [sys.executable, "-m", "ops", "run", "submit", "--preset", PRESET, "--host", pod.alias,
         "--json"], cwd=pod.project, env=pod.env(), capture_output=True, text=True,
        check=False))
    if proc.returncode != 0:
        raise RuntimeError(f"ops run submit failed ({proc.returncode}): {proc.stderr}")
    return seconds, str(json.loads(proc.stdout)["run_id"])


def in_process_submit(pod: Pod) -> tuple[dict[str, float], str]:
    """What the CLI does, in this process: load, connect, runner check, submit()."""
    phases: dict[str, float] = {}
    start = time.perf_counter()
    loaded = pod.load()
    phases["load config"] = time.perf_counter() - start
    target = connect_timed(pod, loaded, phases)
    try:
        phases["submit()"], done = timed(lambda: submit.submit(loaded, target, PRESET))
        phases["total"] = time.perf_counter() - start
        # the local half of the code check (git; the host's half rides on runner submit)
        phases["  submit(): code check"], _ = timed(
            lambda: submit.CodeChoice().plan(loaded, target))
    finally:
        target.close()
    phases["  submit(): the rest"] = phases["submit()"] - phases["  submit(): code check"]
    return phases, done.run_id


def bench_submit(pod: Pod, repeats: int, results: Results) -> None:
    print("\n[3] submit latency (warm host, unchanged code)")
    first_s, run_id = cli_submit(pod)  # syncs the code (the runner is already there)
    wait_finished(pod, run_id)
    print(f"    warm-up CLI submit (first code sync): {first_s:.2f} s")
    cli_s: list[float] = []
    execs: list[str] = []
    for _ in range(repeats):
        before = trips_so_far(pod)
        seconds, run_id = cli_submit(pod)
        execs.append(trips_since(pod, before))
        cli_s.append(seconds)
        wait_finished(pod, run_id)
    phases: dict[str, list[float]] = {}
    for _ in range(repeats):
        got, run_id = in_process_submit(pod)
        for key, value in got.items():
            phases.setdefault(key, []).append(value)
        wait_finished(pod, run_id)
    startup = []
    subprocess.run([sys.executable, "-c", OVERHEAD_IMPORTS], check=True, env=pod.env())
    for _ in range(repeats):
        seconds, _ = timed(lambda: subprocess.run(
            [sys.executable, "-c", OVERHEAD_IMPORTS], check=True, env=pod.env()))
        startup.append(seconds)
    cli_m, inproc_m, startup_m = median(cli_s), median(phases["total"]), median(startup)
    print(f"    CLI, fresh process: {', '.join(f'{s:.2f}' for s in cli_s)} s -> median "
          f"{cli_m:.2f} s; round trips per submit, execs+resident runner (sshd log): {execs}")
    for key, values in phases.items():
        print(f"    in-process {key:22} median {ms(median(values))}")
    print(f"    python start-up + imports of the run commands, the config loader and the SSH "
          f"transport: median {ms(startup_m)}")
    print(f"    CLI - in-process: {ms(cli_m - inproc_m)} (start-up, imports, click, output)")
    rtt = results.raw.get("rtt_s") or exec_round_trip(pod)
    version_s = median([timed(lambda: subprocess.run(
        [sys.executable, "-m", "ops", "--version"], check=True, capture_output=True,
        env=pod.env()))[0]
        for _ in range(max(5, repeats))])
    python_s = median([timed(lambda: subprocess.run([sys.executable, "-c", "pass"],
                                                    check=True))[0] for _ in range(5)])
    print(f"    `ops --version`: median {ms(version_s)} (bare `python -c pass`: {ms(python_s)})")
    results.raw["submit"] = {"cli_s": cli_s, "in_process_s": phases, "startup_s": startup,
                             "first_submit_s": first_s, "version_s": version_s,
                             "python_s": python_s}
    results.raw["submit_execs"] = execs
    results.rows += [
        Row("submit, warm host: round trips (execs+resident)", max(execs, key=trips),
            "runner submit alone", "-", "1 (steady)", all(trips(e) == 1 for e in execs)),
        Row("submit, warm host: CLI end to end", f"{cli_m:.2f} s",
            f"RTT {ms(rtt)}; in-process {inproc_m:.2f} s", f"{cli_m / rtt:.1f}x RTT",
            f"<= {SUBMIT_TARGET_RTTS:g}x RTT = {ms(SUBMIT_TARGET_RTTS * rtt)}",
            cli_m <= SUBMIT_TARGET_RTTS * rtt),
        Row("`ops --version`", ms(version_s), f"python -c pass {ms(python_s)}", "-",
            f"<= {VERSION_TARGET_S:g} s", version_s <= VERSION_TARGET_S),
        Row("CLI overhead (start-up + imports of run status/submit)", ms(startup_m),
            f"python -c pass {ms(python_s)}", "-", f"<= {OVERHEAD_TARGET_S:g} s",
            startup_m <= OVERHEAD_TARGET_S),
    ]


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="run dirs for the status bench")
    parser.add_argument("--small-files", type=int, default=2000,
                        help="1-20 KB files in the fetched run dir")
    parser.add_argument("--size-mb", type=int, default=500,
                        help="size of the one big checkpoint in the fetched run dir (MB)")
    parser.add_argument("--status-repeats", type=int, default=5)
    parser.add_argument("--fetch-repeats", type=int, default=5)
    parser.add_argument("--fetch-budget", type=float, default=FETCH_BUDGET_S,
                        help="seconds of measured fetch rounds (fewer rounds past it)")
    parser.add_argument("--submits", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 runs, 200 small files, 20 MB, fewer repeats")
    parser.add_argument("--only", choices=("status", "fetch", "submit"), action="append",
                        help="run only these benchmarks (repeatable)")
    parser.add_argument("--json", type=Path, help="write the raw samples here")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.small_files, args.size_mb = 100, 200, 20
        args.status_repeats, args.fetch_repeats, args.submits = 3, 1, 3
    only = set(args.only or ("status", "fetch", "submit"))
    results = Results()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ops-bench-remote-") as tmp, \
            loopback_pod(Path(tmp)) as pod:
        print(f"sshd on 127.0.0.1 as alias {pod.alias}; work dir {tmp}; "
              f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
        template = template_run(pod.work) if only & {"status", "fetch"} else None
        if template is not None and "status" in only:
            bench_status(pod, template, args.runs, args.status_repeats, results)
        if template is not None and "fetch" in only:
            bench_fetch(pod, template, results, small=args.small_files, size_mb=args.size_mb,
                        repeats=args.fetch_repeats, budget_s=args.fetch_budget)
        if "submit" in only:
            bench_submit(pod, args.submits, results)
    total = time.perf_counter() - started
    print(f"\nmedians; ratio = ops / baseline (lower is better); total {total:.0f} s")
    print(table([r.cells() for r in results.rows],
                ["benchmark", "ops", "baseline(s)", "ratio", "target", "met?"], left=1))
    if args.json:
        results.raw["rows"] = [r.cells() for r in results.rows]
        args.json.write_text(json.dumps(results.raw, indent=2))
    return 0 if all(r.met is not False for r in results.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
