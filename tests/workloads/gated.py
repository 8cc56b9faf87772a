"""Prints ITERS lines, then waits at each gate until its file exists, ITERS more lines after each.

ARGV: ITERS GATE_PATH... A test opens a gate when it has seen `waiting at gate K` arrive: events,
never wall-clock overlaps. A gate left closed for a minute ends the workload with exit code 3.
"""
import sys
import time
from pathlib import Path

iters, gates = int(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
step = 0
for k in range(len(gates) + 1):
    for _ in range(iters):
        step += 1
        print(f"iter {step}: loss {1 / step:.4f}", flush=True)
    if k == len(gates):
        break
    print(f"waiting at gate {k}", flush=True)
    deadline = time.monotonic() + 60
    while not gates[k].exists():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.02)
