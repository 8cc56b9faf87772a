"""CPU and wall time of `ops` processes on host local, this tree against another (issue 14).

    .venv/bin/python bench/bench_cli.py                        # this tree, 5 runs a command
    git archive HEAD~8 ops runner | tar -x -C /tmp/old
    .venv/bin/python bench/bench_cli.py --baseline /tmp/old    # old and new, interleaved

A throwaway project is made with `ops init` (its smoke preset is submitted once and followed to
its end, so there is a run to list). Each command runs REPEATS times per tree, the trees taking
turns so that both see the same load; one run per tree first warms the caches. CPU is user +
system of the process and its children (getrusage), which a shared machine disturbs far less
than wall time. Both trees read bytecode from one private PYTHONPYCACHEPREFIX: with
PYTHONDONTWRITEBYTECODE=1 set, every module edited since its .pyc was written would otherwise
be compiled again by every process. The config cache lives in the sandbox (XDG_CACHE_HOME).
Targets: `ops --version` <= 0.1 s, the OVERHEAD_IMPORTS line <= 0.15 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OVERHEAD_IMPORTS = ("import ops.cli.main as m; m.get_cli().get_command(None, 'run'); "
                    "import ops.services.target, ops.hosts.ssh")
COMMANDS: dict[str, list[str]] = {
    "ops --version": ["-m", "ops", "--version"],
    "ops run list --json": ["-m", "ops", "run", "list", "--json"],
    "ops run status --json": ["-m", "ops", "run", "status", "--json"],
    "ops run status RUN --json": ["-m", "ops", "run", "status", "@last", "--json"],
    "ops run tail RUN": ["-m", "ops", "run", "tail", "@last"],
    "ops config show --json": ["-m", "ops", "config", "show", "--json"],
    "OVERHEAD_IMPORTS": ["-c", OVERHEAD_IMPORTS],
}


def _env(sandbox: Path, tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "OPS_PROJECT_CONFIG")}
    env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(sandbox / "pyc"),
               XDG_CACHE_HOME=str(sandbox / "cache"))
    return env


def _once(argv: list[str], project: Path, env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = os.times().elapsed
    done = subprocess.run([sys.executable, *argv], cwd=project, env=env, capture_output=True,
                          text=True, check=False)
    wall = os.times().elapsed - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime), wall


def _project(sandbox: Path) -> Path:
    project = sandbox / "proj"
    project.mkdir()
    env = _env(sandbox, REPO)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    for argv in (["-m", "ops", "init"], ["-m", "ops", "run", "submit", "smoke", "--follow"]):
        _once(argv, project, env)
    return project


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}/{statistics.median(values):.3f}/{max(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a tree holding ops/ and runner/ to compare")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("commands", nargs="*", help="names from the table (default: all)")
    args = parser.parse_args()
    trees = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        sandbox = Path(tmp)
        project = _project(sandbox)
        print(f"{'command':28s} {'tree':9s} {'cpu s min/med/max':>20s} {'wall s min/med/max':>20s}")
        for name, argv in COMMANDS.items():
            if args.commands and name not in args.commands:
                continue
            samples: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
            for path in trees.values():
                _once(argv, project, _env(sandbox, path))  # warm bytecode and config
            for _ in range(args.repeats):
                for tree, path in trees.items():
                    samples[tree].append(_once(argv, project, _env(sandbox, path)))
            for tree, got in samples.items():
                print(f"{name:28s} {tree:9s} {_spread([c for c, _ in got]):>20s} "
                      f"{_spread([w for _, w in got]):>20s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
