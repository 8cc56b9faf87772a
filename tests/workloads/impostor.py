"""A research script that writes its own contract-named files into the run dir."""
import json
import os
import sys
from pathlib import Path

run_dir = Path(os.environ["OPS_RUN_DIR"])
(run_dir / "summary.json").write_text(json.dumps({"status": "completed", "ok": True}))
(run_dir / "run_metadata.json").write_text(json.dumps({"run_id": "mine", "git": "none"}))
print("wrote my own summary.json and run_metadata.json")
raise SystemExit(int(sys.argv[1].split("=")[1]) if len(sys.argv) > 1 else 0)
