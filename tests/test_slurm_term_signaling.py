"""A TERM from SLURM's time-limit warning, asked about while SLURM still delivers it.

squeue prints a job's flag instead of its base state, and a running job whose outgoing signal
the node has not yet acknowledged reads SIGNALING. On a loaded machine the wrapper's question
lands in that window (seen in the slurm tier: `SIGNALING|0:38|1:00|`, filed as a cancel, so
the run read `killed` instead of `timeout`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner import slurm

from .test_slurm_units import _fake_squeue, _spec


@pytest.mark.parametrize(("answer", "why"), [
    ("SIGNALING|0:38|1:00|", "time limit"),
    ("RUNNING|0:38|1:00|", "time limit"),
    ("SIGNALING|2-00:00:00|2-00:01:00|", "the time limit is not near"),  # a user's scancel -s
    ("CANCELLED|0:38|1:00|", "SLURM does not say the job is still running"),
], ids=["signaling", "running", "signaling-far-from-the-limit", "cancelled"])
def test_a_term_while_slurm_is_still_signaling_is_the_time_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, why: str) -> None:
    _fake_squeue(tmp_path / "bin", [answer])
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    message, evidence = slurm.term_is_time_limit(tmp_path, _spec())
    assert evidence["why"] == why and evidence["squeue"] == answer
    assert (message is not None) == (why == "time limit")
    if message is not None:
        assert message == "SLURM time limit 1:00 of job 12 reached (38 s left when SLURM sent TERM)"
