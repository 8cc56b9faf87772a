"""`ops run fetch` from the local host: only what is missing, never a truncated file in place."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import Project

pytestmark = pytest.mark.tmux


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".ops" not in p.relative_to(root).parts}


def test_fetch_copies_and_refetch_is_incremental(project: Project, tmp_path: Path) -> None:
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "f-1", "-f").exit_code == 0
    dest = tmp_path / "art"
    first = project.ops("run", "fetch", "f-1", "--to", str(dest), "--json")
    assert first.exit_code == 0, first.stderr
    src = project.run_dir("f-1")
    fetched = dest / "f-1"
    local = _files(fetched)
    assert local == {k: v for k, v in _files(src).items() if not k.startswith("checkpoints/")}
    record = json.loads((fetched / ".ops" / "fetch.json").read_text())
    assert record["remote_status"]["status"] == "completed"
    assert record["with_checkpoints"] is False
    again = project.ops("run", "fetch", "f-1", "--to", str(dest), "--json").json()
    assert again["files_fetched"] == 0 and again["files_up_to_date"] == len(local)
    with_ckpt = project.ops("run", "fetch", "f-1", "--to", str(dest), "--with-checkpoints",
                            "--json").json()
    assert with_ckpt["files_fetched"] == 2  # ckpt_best.json and ckpt_last.json only
    assert _files(fetched) == _files(src)
    assert project.ops("validate", "--deep", str(fetched)).exit_code == 0


def test_interrupted_fetch_leaves_no_truncated_file(project: Project, tmp_path: Path) -> None:
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "f-2", "-f").exit_code == 0
    big = project.run_dir("f-2") / "out" / "big.bin"
    big.write_bytes(os.urandom(8 * 2**20))
    dest = tmp_path / "art"
    # the stream breaks off after 3 MiB, as when the connection drops (the real drop over
    # SSH is in the ssh tier); the receiver must not leave a truncated file in place
    from contextlib import contextmanager

    from ops.config.loader import load_config
    from ops.errors import HostError
    from ops.services import fetch
    from ops.services.hosts import open_target

    loaded = load_config(project.config_path)
    target = open_target(loaded)
    original_stream = target.host.stream

    class Cut:
        def __init__(self, inner, budget):  # type: ignore[no-untyped-def]
            self.inner, self.budget = inner, budget

        def read(self, n=-1):  # type: ignore[no-untyped-def]
            data = self.inner.read(min(n, self.budget) if n > 0 else self.budget)
            self.budget -= len(data)
            return data

    @contextmanager
    def cut_stream(argv, *, input_bytes=b""):  # type: ignore[no-untyped-def]
        with original_stream(argv, input_bytes=input_bytes) as inner:
            yield Cut(inner, 3 * 2**20)

    target.host.stream = cut_stream  # type: ignore[method-assign]
    with pytest.raises(HostError, match=r"fetch of f-2 was interrupted: ") as cut:
        fetch.fetch(target, "f-2", dest)
    assert type(cut.value) is HostError  # ops's own error with a reason, not a crash
    assert not (dest / "f-2" / "out" / "big.bin").exists()
    target.host.stream = original_stream  # type: ignore[method-assign]
    result = fetch.fetch(target, "f-2", dest)
    assert (dest / "f-2" / "out" / "big.bin").read_bytes() == big.read_bytes()
    assert "out/big.bin" in result.files_fetched


def test_fetched_copy_without_checkpoints_validates_deep(project: Project, tmp_path: Path) -> None:
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "f-3", "-f").exit_code == 0
    dest = tmp_path / "art"
    assert project.ops("run", "fetch", "f-3", "--to", str(dest)).exit_code == 0
    report = project.ops("validate", "--deep", "--json", str(dest / "f-3"))
    assert report.exit_code == 0, report.stdout
    rules = {w["rule"] for w in report.json()["warnings"]}
    assert "L4.checkpoint-not-fetched" in rules


def test_status_of_a_fetched_live_run_says_as_of(project: Project) -> None:
    run_id = project.ops("run", "submit", "-p", "slow", "--json").json()["run_id"]
    project.wait_for((project.run_dir(run_id) / "heartbeat.json").exists)
    assert project.ops("run", "fetch", run_id).exit_code == 0
    assert project.ops("run", "cancel", run_id).exit_code == 0
    shown = project.ops("run", "status", run_id, "--fetched", "--json").json()["runs"][0]
    assert shown["status"] in ("running", "launching") and shown["as_of"]
    text = project.ops("run", "status", run_id, "--fetched").stdout
    assert f"as of {shown['as_of']}" in text
