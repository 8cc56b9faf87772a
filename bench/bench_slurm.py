"""The slurm launcher against raw sbatch + squeue, on a real one-node test cluster.

Starts the cluster of tests/slurm_fixture.py (needs root and Debian's slurmctld, slurmd,
slurm-client, munge), then measures:

- **submit -> running**: `python -m runner submit ROOT` (run dir, batch script, sbatch --hold,
  spec rewrite, scontrol release) until SLURM says RUNNING, and until `runner status` says
  `running` (the wrapper's first heartbeat); against `sbatch --wrap` until squeue says RUNNING.
- **status of N runs**: N runs submitted (one runs, the others wait: the node is full) and
  `python -m runner status ROOT` (every run dir read, one squeue call for all) against one raw
  `squeue --me --states=all`, which tells job states but nothing of the runs.

    .venv/bin/python bench/bench_slurm.py              # 5 latency samples, 200 runs (~1-2 min)
    .venv/bin/python bench/bench_slurm.py --runs 50 --samples 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner import verbs  # noqa: E402
from tests.slurm_fixture import SlurmCluster, start_cluster  # noqa: E402

PY = sys.executable


def spec(run_id: str, root: Path, command: str) -> dict[str, Any]:
    return {"schema": "ops.spec/1", "run_id": run_id, "project": "bench", "preset": "bench",
            "kind": "command", "code": {"dir": str(REPO)},
            "workload": {"command": ["{python}", "-c", command], "env": {}, "python": True},
            "config": {}, "overrides": {}, "limits": {"grace_sec": 1},
            "heartbeat": {"interval_s": 0.5, "stall_after_intervals": 3},
            "metrics": {"from_stdout": []}, "dataset": None,
            "secrets": {"env_names": [], "files": [],
                        "store": str(root / ".home" / "secrets" / f"{run_id}.json")},
            "tmux": {"socket": "ops-bench"}, "launcher": "slurm",
            "slurm": {"options": {"cpus_per_task": 2}}}


def runner(*args: str, stdin: str | None = None) -> dict[str, Any]:
    done = subprocess.run([PY, "-m", "runner", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, check=True)
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def wait(predicate: Any, timeout: float = 60.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError("condition not met")


def job_running(cluster: SlurmCluster, job: str) -> bool:
    return cluster.job_state(job) == "RUNNING"


def latency(cluster: SlurmCluster, root: Path, samples: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ops_job_running": [], "ops_status_running": [],
                                   "raw_job_running": []}
    for index in range(samples):
        run_id = f"lat-{index}"
        payload = json.dumps({"spec": spec(run_id, root, "import time; time.sleep(30)"),
                              "secrets": {}})
        start = time.perf_counter()
        job = runner("submit", str(root), stdin=payload)["slurm_job_id"]
        out["ops_job_running"].append(wait(lambda j=job: job_running(cluster, j)) - start)
        out["ops_status_running"].append(wait(lambda r=run_id: runner(
            "status", str(root), r)["runs"][0]["status"] == "running") - start)
        cluster.clear()
        start = time.perf_counter()
        raw = cluster.cmd("sbatch", "--parsable", "-c", "2", "-o", "/dev/null",
                          "--wrap", "sleep 30").strip()
        out["raw_job_running"].append(wait(lambda j=raw: job_running(cluster, j)) - start)
        cluster.clear()
    return out


def status_round_trip(cluster: SlurmCluster, root: Path, runs: int) -> dict[str, float]:
    start = time.perf_counter()
    for index in range(runs):
        verbs.submit(root, {"spec": spec(f"many-{index:04d}", root,
                                         "import time; time.sleep(120)"), "secrets": {}})
    submit_s = time.perf_counter() - start
    timings: dict[str, list[float]] = {"ops": [], "raw": []}
    answer: dict[str, Any] = {}
    for _ in range(3):
        start = time.perf_counter()
        answer = runner("status", str(root))
        timings["ops"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cluster.cmd("squeue", "--me", "--states=all", "--noheader")
        timings["raw"].append(time.perf_counter() - start)
    statuses = [r["status"] for r in answer["runs"] if r["run_id"].startswith("many-")]
    cluster.clear(timeout=60)
    return {"runs": len(statuses), "queued": statuses.count("queued"),
            "submit_each_s": submit_s / runs, "ops_status_s": statistics.median(timings["ops"]),
            "raw_squeue_s": statistics.median(timings["raw"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("bench_slurm starts slurmd as root: run it as root\n")
        return 2
    with tempfile.TemporaryDirectory() as tmp, start_cluster(Path(tmp) / "cluster") as cluster:
        root = Path(tmp) / "runs"
        root.mkdir()
        lat = latency(cluster, root, args.samples)
        many = status_round_trip(cluster, root, args.runs)
    print(f"{'submit -> running (median of ' + str(args.samples) + ')':44} seconds")
    for name, values in lat.items():
        print(f"  {name:42} {statistics.median(values):6.2f}")
    ratio = statistics.median(lat["ops_job_running"]) / statistics.median(lat["raw_job_running"])
    print(f"  {'ratio ops/raw (job RUNNING)':42} {ratio:6.2f}")
    print(f"status of {many['runs']} runs ({many['queued']} queued), one round trip")
    print(f"  {'runner status ROOT (median of 3)':42} {many['ops_status_s']:6.2f}")
    print(f"  {'raw squeue --me --states=all':42} {many['raw_squeue_s']:6.2f}")
    print(f"  {'ratio':42} {many['ops_status_s'] / many['raw_squeue_s']:6.2f}")
    print(f"  {'runner submit, each (in-process)':42} {many['submit_each_s']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
