"""``python -m runner.seg.table RUN_DIR``: the fold x metric table that ends `make demo`.

The sealed-summary path (a real run through ops) is covered by tests/test_flagship.py; here
the rendering and every way a run dir can fail to give a table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from runner.seg import table

FINAL = {
    "fold0/dsc_mean": 0.9357, "fold0/dsc_ci_low": 0.92, "fold0/dsc_ci_high": 0.95,
    "fold0/cldice_mean": 0.9496, "fold0/masd_mean": 0.1223, "fold0/hd95_mean": 0.8267,
    "fold1/dsc_mean": 0.9015, "fold1/dsc_ci_low": 0.88, "fold1/dsc_ci_high": 0.92,
    "dsc_mean": 0.9186, "dsc_ci_low": 0.9, "dsc_ci_high": 0.935, "cldice_mean": 0.94,
    "hd95_mean": math.inf, "folds_completed": 2,
}


def test_rows_per_fold_then_all_with_cis_where_reported() -> None:
    text = table.render({"run_id": "demo-1", "status": "completed", "elapsed_s": 61.4,
                         "metrics_final": FINAL})
    lines = text.splitlines()
    assert lines[0].startswith("run demo-1: completed in 61 s; mean [95% bootstrap CI]")
    assert lines[1].split() == ["fold", "DSC", "clDice", "MASD", "HD95"]
    assert lines[3].split()[:4] == ["0", "0.936", "[0.920,", "0.950]"]
    assert lines[3].split()[4:] == ["0.950", "0.122", "0.827"]
    assert lines[4].split() == ["1", "0.901", "[0.880,", "0.920]", "-", "-", "-"]
    assert lines[5].split() == ["all", "0.919", "[0.900,", "0.935]", "0.940", "-", "-"]
    assert len(lines) == 6


def test_a_summary_without_fold_metrics_is_refused() -> None:
    with pytest.raises(table.TableError, match="no per-fold metrics"):
        table.render({"metrics_final": {"loss": 0.1}})
    with pytest.raises(table.TableError, match="no metrics_final"):
        table.render({"metrics_final": [1, 2]})


def test_cli_exit_codes_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert table.main([]) == 2
    assert "usage: python -m runner.seg.table RUN_DIR" in capsys.readouterr().err
    assert table.main([str(tmp_path / "nope")]) == 1
    assert "nope: not a directory" in capsys.readouterr().err
    assert table.main([str(tmp_path)]) == 1
    assert "no summary.json yet" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text(json.dumps({"schema": "ops.summary/1",
                                                       "written_by": "workload"}))
    assert table.main([str(tmp_path)]) == 1  # a file a workload wrote is not the run's summary
    assert "not the runner" in capsys.readouterr().err
