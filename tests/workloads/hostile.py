"""A workload that tries, one way per --mode, to lie about its run or outlive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUN_DIR = Path(os.environ["OPS_RUN_DIR"])
OUT = Path(os.environ["OPS_OUT_DIR"])
FORGED = {"schema": "ops.summary/1", "run_id": RUN_DIR.name, "status": "completed", "ok": True,
          "exit_code": 0, "signal": None, "started_at": "2026-01-01T00:00:00.000Z",
          "ended_at": "2026-01-01T00:00:01.000Z", "elapsed_s": 1.0,
          "metrics_final": {"dsc": 0.99}, "metrics_best": {"dsc": 0.99}, "failure": None,
          "written_by": "wrapper", "files": {}, "contract_violations": [], "wandb": {}}
REWRITER = f"""
import json, time
time.sleep(1.5)
open({str(RUN_DIR / 'summary.json')!r}, 'w').write(json.dumps({FORGED!r}))
open({str(OUT / 'rewrote')!r}, 'w').write('yes')
"""


def forge() -> None:
    (RUN_DIR / "summary.json").write_text(json.dumps(FORGED))
    print("forged a summary", flush=True)


def spawn(code: str, *, new_session: bool) -> int:
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=new_session)
    return child.pid


def main(mode: str) -> int:
    if mode == "forge_then_sleep":
        forge()
        time.sleep(1000)
    elif mode == "forge_everything":  # no seal commitment, a dead wrapper pid, a summary
        while not (RUN_DIR / "heartbeat.json").exists():  # the wrapper's files are written
            time.sleep(0.05)
        spec = json.loads((RUN_DIR / "spec.json").read_text())
        spec.pop("seal", None)
        (RUN_DIR / "spec.json").write_text(json.dumps(spec))
        meta = json.loads((RUN_DIR / "run_metadata.json").read_text())
        meta["process"]["pid"] = 4_000_000
        (RUN_DIR / "run_metadata.json").write_text(json.dumps(meta))
        (RUN_DIR / "heartbeat.json").unlink(missing_ok=True)
        forge()
        time.sleep(1000)
    elif mode == "forge_then_exit3":
        forge()
        time.sleep(1.0)
        return 3
    elif mode == "orphan_rewriter":  # a child with its output elsewhere outlives the workload
        (OUT / "child.pid").write_text(str(spawn(REWRITER, new_session=False)))
        print("left a child behind", flush=True)
        return 1
    elif mode == "setsid_daemon":  # leaves the process group, then the workload waits
        (OUT / "daemon.pid").write_text(str(spawn("import time; time.sleep(1000)",
                                                  new_session=True)))
        print("daemon started", flush=True)
        time.sleep(1000)
    elif mode == "rt_signal":
        print("about to die of a real-time signal", flush=True)
        os.kill(os.getpid(), signal.SIGRTMIN + 1)
        time.sleep(5)
    elif mode == "nested_metrics":
        with open(RUN_DIR / "metrics.jsonl", "a") as fh:
            fh.write('{"step": 1, "metrics": ' + "[" * 3000 + "]" * 3000 + "}\n")
        print("wrote a deep metrics line", flush=True)
    elif mode == "print_home":
        print("HOME=" + os.environ.get("HOME", ""), flush=True)
        time.sleep(float(os.environ.get("HOSTILE_SLEEP", "0")))
    elif mode == "print_secret_lines":
        for number, line in enumerate(os.environ["PEM_KEY"].splitlines()):
            print(f"line {number}: {line}", flush=True)  # never the whole value at once
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    raise SystemExit(main(args["mode"]))
