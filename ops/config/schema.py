"""Generate schemas/project.schema.json from the models.

python -m ops.config.schema           # write schemas/project.schema.json
python -m ops.config.schema --print   # print it instead
python -m ops.config.schema --check   # exit 1 when the committed file differs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ops.config.models import ProjectConfig
from runner.contract import atomic_write_bytes, dumps

SCHEMA_ID = "https://pod-ops.dev/schemas/project.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "project.schema.json"


def project_schema() -> dict[str, Any]:
    """The JSON Schema of configs/ops/project.json (and of the merged overlay)."""
    generated = ProjectConfig.model_json_schema(by_alias=True)
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "pod-ops project configuration (configs/ops/project.json)",
        "description": "One file says how to reach hosts, where outputs go and which presets "
        "exist; project.local.json, deep-merged over it, holds machine-local values.",
        **generated,
    }


def schema_bytes() -> bytes:
    return dumps(project_schema())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.config.schema", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print", action="store_true", help="print the schema to stdout")
    mode.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    parser.add_argument("--output", type=Path, default=SCHEMA_FILE, help="file to write/check")
    args = parser.parse_args(argv)
    data = schema_bytes()
    if args.print:
        sys.stdout.write(data.decode())
        return 0
    if args.check:
        current = args.output.read_bytes() if args.output.is_file() else b""
        if current != data:
            sys.stderr.write(f"{args.output} is stale: run `python -m ops.config.schema`\n")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.output, data)
    sys.stdout.write(f"wrote {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
