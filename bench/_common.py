"""Shared by the benchmarks: build run directories the way ops does, and print small tables.

A run dir is made exactly as `ops run submit` + `runner submit` make one, minus tmux: a temp
project.json is loaded and validated by ops, the spec comes from `ops.services.spec.build_spec`,
secrets go into the per-run store with `runner.redact.place_store`, and the wrapper
(`python -m runner exec RUN_DIR`) is then started directly by the benchmark.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.config.loader import load_config, resolve_preset
from ops.services.spec import HostPaths, build_spec
from runner import contract, redact

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sandbox:
    """A throwaway project: its config, its outputs root and its ops home."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "configs" / "ops" / "project.json"

    @property
    def outputs(self) -> Path:
        return self.root / "runs"

    @property
    def ops_home(self) -> Path:
        return self.root / "ops-home"


def make_run_dir(box: Sandbox, run_id: str, preset: Mapping[str, Any], *,
                 interval_s: float = 5.0, secrets: Mapping[str, str] | None = None) -> Path:
    """Create ``<outputs>/<run_id>`` with spec.json (and a secret store) as ops would."""
    doc = {"project": {"name": "bench", "remote_outputs_dir": str(box.outputs),
                       "ops_home": str(box.ops_home)},
           "tmux": {"watch_interval_sec": interval_s},
           "presets": {"bench": dict(preset)}}
    box.config_path.parent.mkdir(parents=True, exist_ok=True)
    box.config_path.write_text(json.dumps(doc, indent=2))
    loaded = load_config(box.config_path)  # the same validation a user's config gets
    resolved = resolve_preset(loaded.config, "bench")
    paths = HostPaths(str(box.outputs), str(box.ops_home))
    code = {"dir": str(REPO), "commit": None, "ref": None, "branch": None, "dirty": None,
            "base_commit": None}
    secrets = dict(secrets or {})
    spec = build_spec(loaded, resolved, run_id, paths=paths, code=code,
                      secret_names=sorted(secrets))
    run_dir = contract.make_run_dir(box.outputs, run_id)
    redact.place_store(spec, secrets, box.outputs)  # as `runner submit` does
    contract.atomic_write_json(run_dir / contract.SPEC, spec)
    return run_dir


def start_wrapper(run_dir: Path, code: Path = REPO) -> subprocess.Popen[bytes]:
    """`python -m runner exec RUN_DIR`, as the tmux session would run it (stdin /dev/null).

    ``code`` is the directory `runner` is imported from (`-m` puts the cwd first on sys.path),
    so a patched copy of the runner can be measured beside this one.
    """
    with open(run_dir / contract.WRAPPER_LOG, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "runner", "exec", str(run_dir)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, cwd=code)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], left: int = 1) -> str:
    """A plain text table: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                          strict=False)]
    lines = ["  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=False))).rstrip()
             for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
