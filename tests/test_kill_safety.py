"""SIGKILL the wrapper at random moments: the record must stay readable and secret-free.

Each trial creates a run dir and its secret store exactly as `runner submit` does, starts the
wrapper as the tmux session would, kills it by pid after a random delay (from before it took
its store to after the run ended), then asks `runner status` once. Afterwards every JSON file
of the run dir parses, the plaintext store is gone, no process of the run is left, and the
status is `dead` or a recorded one.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ops.config.loader import load_config, resolve_preset
from ops.services.spec import HostPaths, build_spec
from runner import contract, reaper, redact
from runner.status import run_status

from .conftest import REPO

TRIALS = 30
CANARY = "kill-safety-canary-7c1e"
WORKLOAD = ("import os, time\n"
            "for i in range(6):\n"
            "    print('step', i, flush=True)\n"
            "    time.sleep(0.05)\n")


def make_run(tmp: Path, run_id: str) -> Path:
    outputs, home = tmp / "runs", tmp / "ops-home"
    tmp.mkdir(parents=True)
    config = tmp / "project.json"
    config.write_text(json.dumps({
        "project": {"name": "kill", "remote_outputs_dir": str(outputs), "ops_home": str(home)},
        "tmux": {"watch_interval_sec": 0.1},
        "presets": {"p": {"kind": "command", "command": ["{python}", "-c", WORKLOAD],
                          "secrets_env": ["KILL_TOKEN"]}}}))
    loaded = load_config(config)
    spec = build_spec(loaded, resolve_preset(loaded.config, "p"), run_id,
                      paths=HostPaths(str(outputs), str(home)),
                      code={"dir": str(REPO), "commit": None, "ref": None, "branch": None,
                            "dirty": None, "base_commit": None},
                      secret_names=["KILL_TOKEN"])
    run_dir = contract.make_run_dir(outputs, run_id)
    redact.place_store(spec, {"KILL_TOKEN": CANARY}, outputs)
    contract.atomic_write_json(run_dir / contract.SPEC, spec)
    return run_dir


def run_processes(run_dir: Path) -> list[psutil.Process]:
    return [p for p in reaper.run_processes(str(run_dir.resolve()), None)
            if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_sigkill_of_the_wrapper_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        run_dir = make_run(tmp_path / f"t{trial}", f"kill-{trial}")
        spec = json.loads((run_dir / contract.SPEC).read_text())
        store = Path(spec["secrets"]["store"])
        wrapper = subprocess.Popen([sys.executable, "-m", "runner", "exec", str(run_dir)],
                                   cwd=REPO, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.9))
        wrapper.kill()
        wrapper.wait()
        deadline = time.time() + 5
        while run_processes(run_dir) and time.time() < deadline:
            time.sleep(0.05)
        assert run_processes(run_dir) == [], f"trial {trial}: the workload outlived its wrapper"
        # as the status verb asks: past the launch window, tidying what a dead run left
        info = run_status(run_dir, now=time.time() + 120, tidy=True)
        outcomes[str(info["status"])] = outcomes.get(str(info["status"]), 0) + 1
        assert info["status"] in ("dead", *contract.RECORDED_STATUSES), (trial, info)
        assert not store.exists(), f"trial {trial}: the plaintext secret store is still there"
        for path in run_dir.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                data = path.read_bytes()
                assert CANARY.encode() not in data, f"trial {trial}: canary in {path.name}"
                if path.suffix == ".json":
                    json.loads(data)  # atomic writes: never a half-written document
    # the random delays must have hit both sides of the run's end
    assert outcomes.get("dead", 0) >= 5 and sum(outcomes.values()) == TRIALS, outcomes
