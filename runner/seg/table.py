"""``python -m runner.seg.table RUN_DIR``: the fold x metric table of a finished `monai_seg` run.

Read from the run's own summary.json (the runner's sealed one, never a file a workload could
have put there): per fold and over all validation volumes, the mean of DSC, clDice, MASD and
HD95 with its bootstrap confidence interval, as the trainer reported them in ``metrics_final``
(``fold0/dsc_mean``, ``dsc_ci_low``...). ``make demo`` ends with it. Standard library only.

Exit codes: 0 printed, 1 the run has no usable summary (still running, not sealed, unreadable)
or reports no fold metrics, 2 usage.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner import contract

METRICS = (("dsc", "DSC"), ("cldice", "clDice"), ("masd", "MASD"), ("hd95", "HD95"))
FOLD_KEY = re.compile(r"^fold(\d{1,4})/dsc_mean$")


class TableError(Exception):
    """The run directory cannot give a table; the message says why."""


def load_summary(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise TableError(f"{run_dir}: not a directory")
    problem = contract.summary_problem(run_dir)
    if problem is not None:
        raise TableError(f"{run_dir}: {problem}")
    summary = contract.read_runner_summary(run_dir)
    if summary is None:
        raise TableError(f"{run_dir}: no summary.json yet (is the run still going?)")
    return summary


def cell(values: Mapping[str, Any], key: str) -> str:
    """``0.934 [0.921, 0.947]``, or ``-`` when the trainer reported no finite mean."""
    parts = [values.get(f"{key}_{part}") for part in ("mean", "ci_low", "ci_high")]
    numbers = [float(p) if isinstance(p, (int, float)) and not isinstance(p, bool)
               and math.isfinite(p) else None for p in parts]
    mean, low, high = numbers
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def rows(final: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    folds = sorted({int(m.group(1)) for key in final if (m := FOLD_KEY.match(str(key)))})
    if not folds:
        raise TableError("summary.json reports no per-fold metrics (fold0/dsc_mean ...): "
                         "not a finished monai_seg run")
    out = [(str(k), [cell(final, f"fold{k}/{name}") for name, _ in METRICS]) for k in folds]
    out.append(("all", [cell(final, name) for name, _ in METRICS]))
    return out


def render(summary: Mapping[str, Any]) -> str:
    final = summary.get("metrics_final")
    if not isinstance(final, dict):
        raise TableError("summary.json has no metrics_final")
    body = rows(final)
    header = ["fold", *(title for _, title in METRICS)]
    widths = [max(len(header[i]), *(len(r[1][i - 1]) if i else len(r[0]) for r in body))
              for i in range(len(header))]
    lines = [_line(header, widths), _line(["-" * w for w in widths], widths)]
    lines += [_line([name, *cells], widths) for name, cells in body]
    elapsed = summary.get("elapsed_s")
    took = f" in {float(elapsed):.0f} s" if isinstance(elapsed, (int, float)) else ""
    head = f"run {summary.get('run_id')}: {summary.get('status')}{took}; mean [95% bootstrap " \
           "CI] over validation volumes, MASD and HD95 in the spacing's units"
    return "\n".join([head, *lines])


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m runner.seg.table RUN_DIR", file=sys.stderr)
        return 2
    try:
        print(render(load_summary(Path(args[0]))))
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
