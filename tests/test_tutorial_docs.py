"""What the docs say a command prints is what it prints (issue 8, item 10)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops.services import data

pytest.importorskip("nibabel", reason="ops data needs the train extra")

HOW_TO = Path(__file__).resolve().parent.parent / "docs" / "how-to" / "synthetic-data.md"


def test_profile_text_has_the_per_volume_table_the_how_to_promises(tmp_path: Path) -> None:
    assert "per volume: shape, spacing and its unit, dtypes, bytes on disk, anisotropy" in \
        re.sub(r"\s+", " ", HOW_TO.read_text())
    data.synth(tmp_path, n=3, size=16, workers=1)
    lines = data.profile_text(data.profile(tmp_path)).splitlines()
    assert lines[0].split() == ["VOLUME", "SHAPE", "SPACING", "DTYPES", "ON", "DISK", "ANISO"]
    rows = lines[1:4]
    assert [row.split()[0] for row in rows] == ["vessel_000", "vessel_001", "vessel_002"]
    for row in rows:
        assert re.search(r"16 x 16 x \d+ +[0-9.]+ x [0-9.]+ x [0-9.]+ um +uint16/uint8 +"
                         r"[0-9.]+ MiB +[0-9.]+$", row), row
    assert any(line.startswith("safe patch") for line in lines)
