"""A fake cloud for tests: the fake CLIs on PATH, their shared state file, and helpers."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAKE = Path(__file__).resolve().parent / "fake_cli.py"
CLIS = ("vastai", "runpodctl", "lium")


@dataclass
class FakeCloud:
    bin_dir: Path
    state: Path

    @classmethod
    def make(cls, root: Path, port: int, **scenario: Any) -> FakeCloud:
        bin_dir = root / "fake-bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name in CLIS:  # a wrapper per name, so argv[0] picks the dialect
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n'
                              .replace('"$@"', f'--as {name} "$@"'))
            script.chmod(0o755)
        cloud = cls(bin_dir, root / "fake-cloud.json")
        cloud.scenario(port=port, **scenario)
        return cloud

    def scenario(self, **changes: Any) -> None:
        doc = self.read()
        doc.setdefault("scenario", {}).update(changes)
        self.state.write_text(json.dumps(doc))

    def read(self) -> dict[str, Any]:
        if not self.state.exists():
            return {}
        doc: dict[str, Any] = json.loads(self.state.read_text())
        return doc

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "FAKE_PROVIDER_STATE": str(self.state)}

    def instances(self) -> list[dict[str, Any]]:
        return list(self.read().get("instances", {}).values())

    def calls(self) -> list[list[str]]:
        return list(self.read().get("calls", []))
