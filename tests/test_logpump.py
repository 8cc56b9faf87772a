"""The tee path in isolation: same bytes out, secrets masked across reads, every metric line
found whatever the chunking."""

from __future__ import annotations

import os
import random
import re
import threading
from pathlib import Path

import pytest

from runner import contract
from runner.logpump import LogPump, StdoutMetrics, required_literal
from runner.redact import Redactor

PATTERN = r"iter (?P<step>\d+): loss (?P<loss>[0-9.eE+-]+)"


def _log(seed: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(3000):
        kind = rng.random()
        if kind < 0.05:
            lines.append(f"iter {i}: loss {rng.random():.5f}")
        elif kind < 0.06:
            lines.append("x" * rng.randint(70_000, 90_000))  # longer than a read
        elif kind < 0.07:
            lines.append(f"progress\riter {i}: loss 0.5")  # a carriage return ends a line
        else:
            lines.append(f"2026-11-23 INFO step {i} of work, nothing to see " * rng.randint(1, 3))
    return ("\n".join(lines) + "\npartial iter 9999: loss 1.5").encode()


def _reference(data: bytes) -> list[tuple[int | None, float]]:
    pattern = re.compile(PATTERN.encode())
    found = []
    for line in data.splitlines():
        match = pattern.search(line)
        if match:
            found.append((int(match["step"]), float(match["loss"])))
    return found


def _pump(tmp_path: Path, data: bytes, secrets: list[str], write_sizes: list[int]) -> Path:
    read_fd, write_fd = os.pipe()
    log = tmp_path / "stdout.log"
    pump = LogPump(read_fd, log, Redactor(secrets),
                   StdoutMetrics([PATTERN], tmp_path / "metrics.jsonl"))
    thread = threading.Thread(target=pump.run)
    thread.start()
    pos, i = 0, 0
    while pos < len(data):
        size = write_sizes[i % len(write_sizes)]
        os.write(write_fd, data[pos:pos + size])
        pos, i = pos + size, i + 1
    os.close(write_fd)
    thread.join()
    os.close(read_fd)
    return log


@pytest.mark.parametrize("sizes", [[1 << 16], [7, 4093, 100_000], [1]], ids=["64k", "odd", "1"])
@pytest.mark.parametrize("secrets", [[], ["s3cr3t-token-value"]], ids=["plain", "redacting"])
def test_metrics_match_a_per_line_reference(tmp_path: Path, sizes: list[int],
                                            secrets: list[str]) -> None:
    data = _log(1)
    if sizes == [1]:
        data = data[:200_000]
    log = _pump(tmp_path, data, secrets, sizes)
    assert log.read_bytes() == data
    records = contract.read_jsonl(tmp_path / "metrics.jsonl").records
    assert [(r["step"], r["metrics"]["loss"]) for r in records] == _reference(data)


def test_secret_split_across_reads_is_masked(tmp_path: Path) -> None:
    secret = "tok-" + "9" * 40
    data = f"a {secret} b\nno newline at all: {secret}".encode() * 50
    log = _pump(tmp_path, data, [secret], [5, 17, 3])
    out = log.read_bytes()
    assert secret.encode() not in out
    assert out.count(b"[REDACTED]") == 100


@pytest.mark.parametrize(("pattern", "needle"), [
    (PATTERN, b"iter"), (r"(?i)loss (?P<x>\d)", None), (r"(a|b)=(?P<v>\d)", None),
    (r"val_dice=(?P<d>[0-9.]+)", b"val_dice"),
], ids=["words", "ignorecase", "alternative", "underscore-word"])
def test_required_literal(pattern: str, needle: bytes | None) -> None:
    assert required_literal(re.compile(pattern.encode())) == needle
