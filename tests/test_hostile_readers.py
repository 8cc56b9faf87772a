"""Readers of a run directory treat it as untrusted input (issue 7, items 10, 11 and 13).

Each test builds the hostile thing for real: a FIFO made with os.mkfifo, a directory or a
symbolic link where a file belongs, JSON nested thousands of levels deep, a file over the cap.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner import contract

from .conftest import REPO

pytestmark = pytest.mark.timeout(20)  # a reader that blocks on a FIFO fails, not hangs

NESTED = ("[" * 3000 + "]" * 3000)


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.timeout(5)
def test_read_regular_bytes_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "spec.json")
    with pytest.raises(contract.ContractError, match="is a FIFO, not a regular file"):
        contract.read_regular_bytes(tmp_path / "spec.json")
    with pytest.raises(contract.ContractError, match="FIFO"):
        contract.read_json(tmp_path / "spec.json")
    assert contract.read_json_or_none(tmp_path / "spec.json") is None
    assert contract.read_jsonl(tmp_path / "spec.json").problem is not None
    assert list(contract.iter_jsonl_from(tmp_path / "spec.json", 0)) == []
    with pytest.raises(contract.ContractError, match="FIFO"):
        contract.sha256_file(tmp_path / "spec.json")


@pytest.mark.timeout(5)
def test_open_regular_refuses_every_other_kind(tmp_path: Path) -> None:
    (tmp_path / "a_dir").mkdir()
    target = _write(tmp_path / "target", b'{"x": 1}')
    (tmp_path / "a_link").symlink_to(target)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "a_sock"))
    try:
        for name, kind in (("a_dir", "a directory"), ("a_link", "a symbolic link"),
                           ("a_sock", "a socket")):
            with pytest.raises(contract.ContractError, match=f"is {kind}, not a regular file"):
                contract.open_regular(tmp_path / name)
    finally:
        sock.close()
    with pytest.raises(contract.ContractError, match="character device"):
        contract.read_regular_bytes(Path("/dev/zero"))
    with pytest.raises(FileNotFoundError):
        contract.read_regular_bytes(tmp_path / "absent")
    assert contract.read_regular_bytes(target) == b'{"x": 1}'


def test_read_is_bounded(tmp_path: Path) -> None:
    big = _write(tmp_path / "big.json", b" " * 4096 + b"{}")
    with pytest.raises(contract.ContractError, match="over the 1024-byte limit"):
        contract.read_regular_bytes(big, limit=1024)
    assert contract.read_json(big) == {}
    lines = _write(tmp_path / "m.jsonl", b'{"a": 1}\n' * 100)
    read = contract.read_jsonl(lines, limit=95)
    assert len(read.records) == 10 and read.truncated and not read.torn_tail
    assert any("read limit" in w for w in read.warnings)
    ends = [end for end, _ in contract.iter_jsonl_from(lines, 9, limit=30)]
    assert ends == [18, 27, 36]


def test_deep_nesting_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    path = _write(tmp_path / "metrics.jsonl",
                  '{"step": 1, "metrics": {"loss": 0.5}}\n'
                  f'{{"step": 2, "metrics": {NESTED}}}\n'
                  f'{{"step": 3, "metrics": {"[" * 150 + "]" * 150}}}\n'
                  '{"step": 4, "metrics": {"loss": 0.25}}\n')
    read = contract.read_jsonl(path)
    assert [r["step"] for r in read.records] == [1, 4]
    assert read.bad_lines == [2, 3]
    assert [r["step"] for _, r in contract.iter_jsonl_from(path, 0)] == [1, 4]
    doc = _write(tmp_path / "spec.json", '{"a": ' + NESTED + "}")
    with pytest.raises(contract.ContractError, match=r"nested too deeply|levels deep"):
        contract.read_json(doc)


def test_parse_json_rejects_what_the_contract_never_writes() -> None:
    for text in (b"NaN", b'{"x": Infinity}', b"\xff\xfe{}", b"1" + b"0" * 400,
                 b'{"a": [-' + b"9" * 301 + b"]}"):
        with pytest.raises(ValueError):
            contract.parse_json(text)
    assert contract.parse_json(b'{"a": [[1]]}') == {"a": [[1]]}
    assert contract.too_deep([[[]]], limit=2) and not contract.too_deep([[[]]], limit=3)


def test_valid_json_reads_as_before(tmp_path: Path) -> None:
    doc = {"schema": "ops.spec/1", "run_id": "r1", "config": {"a": [1, 2, {"b": None}]}}
    path = _write(tmp_path / "spec.json", json.dumps(doc))
    assert contract.read_json(path) == doc
    assert contract.sha256_file(path) == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(5)
def test_sha256_follows_dataset_links_but_not_run_dir_links(tmp_path: Path) -> None:
    data = _write(tmp_path / "data.bin", b"abc")
    (tmp_path / "link").symlink_to(data)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link-to-fifo").symlink_to(tmp_path / "fifo")
    assert contract.sha256_file(tmp_path / "link") == contract.sha256_file(data)
    with pytest.raises(contract.ContractError, match="symbolic link"):
        contract.sha256_file(tmp_path / "link", follow_symlinks=False)
    with pytest.raises(contract.ContractError, match="FIFO"):
        contract.sha256_file(tmp_path / "link-to-fifo")


FIFO_NAMES = [contract.SPEC, contract.METADATA, contract.HEARTBEAT, contract.SUMMARY,
              contract.EXIT, contract.METRICS, contract.EVENTS, contract.STDOUT_LOG,
              contract.CONFIG_EFFECTIVE, "checkpoints/ckpt_last.pt"]


def _ended_run(root: Path) -> Path:
    from .test_validate import valid_files, write_run_dir

    data = root / "data"
    data.mkdir(parents=True)
    return write_run_dir(root / "runs", valid_files(data))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", FIFO_NAMES)
def test_a_fifo_never_hangs_status_list_show_or_validate(tmp_path: Path, name: str) -> None:
    from runner import status
    from runner.validate import validate_run_dir

    run_dir = _ended_run(tmp_path)
    (run_dir / name).unlink()
    os.mkfifo(run_dir / name)  # in place of a contract file, or of a file summary.json lists
    info = status.run_status(run_dir)
    assert info["status"] in contract.RECORDED_STATUSES + contract.DERIVED_STATUSES
    [listed] = status.list_runs(run_dir.parent)
    assert listed["status"] == info["status"]
    report = validate_run_dir(run_dir, deep=True)
    assert not report.ok
    assert any(v.file == name and "FIFO" in v.message for v in report.violations), \
        report.render_text()
    show = subprocess.run([sys.executable, "-m", "runner", "show", str(run_dir), contract.SPEC],
                          capture_output=True, text=True, timeout=8, check=False, cwd=REPO)
    assert show.returncode == (1 if name == contract.SPEC else 0), show.stdout


def test_the_wrapper_end_of_run_read_survives_a_deeply_nested_metrics_line(
        tmp_path: Path) -> None:
    from runner.finish import metrics_from_log

    _write(tmp_path / contract.METRICS,
           '{"step": 1, "metrics": {"loss": 0.5}}\n'
           f'{{"step": 2, "metrics": {{"loss": {NESTED}}}}}\n'
           '{"step": 3, "metrics": {"loss": 0.25}}\n'
           f'{{"step": 4, "metrics": {{"loss": 1{"0" * 400}, "acc": 1e999}}}}\n')
    final, best = metrics_from_log(tmp_path, {"loss": "min"})
    assert final["loss"] == 0.25 and best["loss"] == 0.25


@pytest.mark.timeout(15)
def test_tail_of_a_fifo_log_is_an_error_not_a_hang(tmp_path: Path) -> None:
    run_dir = _ended_run(tmp_path)
    (run_dir / contract.STDOUT_LOG).unlink()
    os.mkfifo(run_dir / contract.STDOUT_LOG)
    proc = subprocess.run([sys.executable, "-m", "runner", "tail", str(run_dir)],
                          capture_output=True, text=True, timeout=10, check=False, cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FIFO" in json.loads(proc.stdout)["error"]["message"]
