"""Property-based fuzzing of every run-dir reader (issue 7, item 14, readers half).

Random JSON values, random bytes and hostile file kinds are written into the contract files
of an otherwise valid run dir; `run_status`, `list_runs` and `validate_run_dir` must never
raise or hang, and must answer with a status the contract knows. Bounded and derandomized, so
CI runs the same examples every time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.cli import render
from ops.errors import HostError
from ops.services import runs as runs_service
from runner import contract, status
from runner.validate import validate_run_dir

from .test_hostile_rundirs import write_run
from .test_validate import valid_files

pytestmark = pytest.mark.timeout(120)

STATUSES = (*contract.RECORDED_STATUSES, *contract.DERIVED_STATUSES)
FUZZ = settings(max_examples=120, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TEMPLATES = valid_files(Path(__file__).parent / "workloads")
JSON_NAMES = sorted(contract.JSON_FILES)
ALL_NAMES = [*JSON_NAMES, *contract.JSONL_FILES, contract.STDOUT_LOG, contract.COMMAND]
KINDS = ("fifo", "dir", "symlink", "nested", "empty")

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


@st.composite
def edited_doc(draw: st.DrawFn, name: str) -> bytes:
    """The valid document of ``name`` with some fields (top level or one below) replaced."""
    doc = json.loads(json.dumps(TEMPLATES.get(name, {"schema": f"ops.{name}/1"})))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        key = draw(st.sampled_from(sorted(doc) or ["x"]))
        inner = doc.get(key)
        if isinstance(inner, dict) and inner and draw(st.booleans()):
            inner[draw(st.sampled_from(sorted(inner)))] = draw(values)
        else:
            doc[key] = draw(values)
    return json.dumps(doc).encode()


@st.composite
def jsonl_text(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40),
                          max_size=6))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


def content(name: str) -> st.SearchStrategy[Any]:
    """What a hostile workload might leave as ``name``: bytes, JSON, or a file kind."""
    json_like = edited_doc(name) if name in contract.JSON_FILES else jsonl_text()
    return st.one_of(json_like, values.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=200), st.sampled_from(KINDS))


def place(run_dir: Path, name: str, what: Any) -> None:
    path = run_dir / name
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    if what == "fifo":
        os.mkfifo(path)
    elif what == "dir":
        path.mkdir()
    elif what == "symlink":
        path.symlink_to(run_dir / contract.SPEC)
    elif what == "nested":
        path.write_bytes(b"[" * 3000 + b"]" * 3000)
    elif what == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(what)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, Path]]:
    """A live run (a real `sleep` as its wrapper) and an ended one, written once; each example
    works on a copy (copying skips the fsyncs of the runner's atomic writes)."""
    proc = subprocess.Popen(["sleep", "300"])
    base = tmp_path_factory.mktemp("fuzz-templates")
    yield {ended: write_run(base / str(ended), "fuzz-run", proc.pid, ended=ended)
           for ended in (False, True)}
    proc.kill()
    proc.wait()


def copy_run(templates: dict[bool, Path], ended: bool, tmp: str) -> tuple[Path, Path]:
    root = Path(tmp) / "runs"
    run_dir = root / "fuzz-run"
    shutil.copytree(templates[ended], run_dir, symlinks=True)
    return root, run_dir


def check_readers(root: Path, run_dir: Path) -> None:
    info = status.run_status(run_dir)
    assert info["status"] in STATUSES, info
    json.dumps(info, allow_nan=False)
    [listed] = status.list_runs(root)
    assert listed["status"] in STATUSES
    json.dumps(listed, allow_nan=False)
    report = validate_run_dir(run_dir, deep=True)
    json.dumps(report.to_json(), allow_nan=False)
    report.render_text()
    final = status.final_summary(run_dir)
    assert final is None or isinstance(final, dict)


@FUZZ
@given(data=st.data(), name=st.sampled_from(ALL_NAMES), ended=st.booleans())
def test_one_hostile_file_never_breaks_a_reader(templates: dict[bool, Path],
                                                data: st.DataObject, name: str,
                                                ended: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = copy_run(templates, ended, tmp)
        place(run_dir, name, data.draw(content(name)))
        check_readers(root, run_dir)


@FUZZ
@given(data=st.data(), names=st.lists(st.sampled_from(ALL_NAMES), min_size=2, max_size=5,
                                      unique=True))
def test_many_hostile_files_never_break_a_reader(templates: dict[bool, Path],
                                                 data: st.DataObject, names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, run_dir = copy_run(templates, data.draw(st.booleans()), tmp)
        for name in names:
            place(run_dir, name, data.draw(content(name)))
        check_readers(root, run_dir)


status_keys = st.sampled_from(["run_id", "status", "reason", "preset", "step", "failure",
                               "metrics_final", "notes", "started_at", "tmux_alive",
                               "exit_code", "heartbeat_age_s", "kind"])


@settings(max_examples=100, derandomize=True, deadline=None)
@given(runs=st.lists(st.dictionaries(status_keys, values, max_size=8), max_size=4))
def test_ops_rendering_never_breaks_on_a_status_answer(runs: list[dict[str, Any]]) -> None:
    try:
        checked = runs_service.checked_runs({"runs": runs})
    except HostError:
        return
    table = render.runs_table(checked)
    assert "\x1b" not in table
    for run in checked:
        render.run_detail(run)
