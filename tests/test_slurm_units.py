"""The slurm launcher's parsing and checks, without a cluster: what reaches sbatch's argv,
how SLURM's answers are read, and what status says when SLURM cannot be asked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ops.config.models import HostConfig
from runner import contract, slurm, status


def _spec(**slurm_block: Any) -> dict[str, Any]:
    return {"run_id": "r1", "launcher": "slurm", "limits": {"grace_sec": 5},
            "slurm": {"options": {"cpus_per_task": 2, "time": "01:00:00"}, **slurm_block}}


def test_sbatch_argv_has_the_contracts_options(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    argv = slurm.sbatch_argv(run_dir, _spec(extra=["--constraint=a100"]),
                             dependency="afterany:7")
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-1] == str(run_dir / "slurm.sh")
    for option in ("--job-name=ops-r1", f"--output={run_dir}/slurm-%j.out",
                   "--open-mode=append", "--signal=B:TERM@40", "--no-requeue", "--hold",
                   "--cpus-per-task=2", "--time=01:00:00", "--dependency=afterany:7",
                   "--constraint=a100"):
        assert option in argv
    assert "exec" in slurm.script_text(run_dir) and str(run_dir) in slurm.script_text(run_dir)


@pytest.mark.parametrize("options", [{"cpus_per_task": "2 --uid=0"}, {"output": "/x"},
                                     {"time": "1\n#SBATCH"}, "partition=gpu"])
def test_options_that_are_not_plain_values_are_refused(options: Any) -> None:
    with pytest.raises(slurm.SlurmError):
        slurm.option_args(options)


@pytest.mark.parametrize("extra", [["-A x"], ["--x\n--y"], "--mem=1G", [1]])
def test_extra_must_be_long_options(extra: Any) -> None:
    with pytest.raises(slurm.SlurmError):
        slurm.extra_args(extra)


def test_the_term_lead_defaults_to_two_graces_and_a_margin() -> None:
    assert slurm.signal_lead(_spec()) == 40
    assert slurm.signal_lead(_spec(signal_before_s=90)) == 90
    assert slurm.signal_lead({"limits": {"grace_sec": float("nan")}}) == 50


def test_squeue_exit_codes_are_wait_statuses() -> None:
    jobs = slurm.parse_squeue("4|FAILED|NonZeroExitCode|768|\n5|CANCELLED|None|15|\n"
                              "6|PENDING|Resources|0|\nnot a job\n7|RUNNING|None|x|\n")
    assert (jobs["4"].exit_code, jobs["4"].signal) == (3, None)
    assert (jobs["5"].exit_code, jobs["5"].signal) == (None, "SIGTERM")
    assert jobs["6"].waiting and jobs["6"].active and not jobs["4"].active
    assert jobs["7"].exit_code is None and set(jobs) == {"4", "5", "6", "7"}


def test_sacct_text_is_code_colon_signal() -> None:
    jobs = slurm.parse_sacct("9|TIMEOUT|0:15\n10|OUT_OF_MEMORY|0:125\n11|COMPLETED|2:0\n")
    assert jobs["9"].state == "TIMEOUT" and jobs["9"].signal == "SIGTERM"
    assert jobs["11"].exit_code == 2 and jobs["11"].signal is None


def test_a_term_outside_slurm_or_after_an_ops_cancel_is_never_a_time_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm.term_is_time_limit(tmp_path, _spec())[0] is None
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    slurm.mark_cancel(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue could answer anyway
    message, evidence = slurm.term_is_time_limit(tmp_path, _spec())
    assert message is None and evidence == {"job_id": "12", "why": "ops cancelled the run"}


def _fake_squeue(bin_dir: Path, answers: list[str]) -> Path:
    """A squeue that fails (a busy controller) or answers, one line of `answers` per call:
    a real slurmctld cannot be made to time out on demand."""
    bin_dir.mkdir()
    calls = bin_dir / "calls"
    lines = "\n".join(answers)
    script = bin_dir / "squeue"
    script.write_text(f"""#!/bin/sh
n=$(wc -l < {calls} 2>/dev/null || echo 0)
echo x >> {calls}
line=$(printf '%s\\n' "{lines}" | sed -n "$((n + 1))p")
if [ "$line" = FAIL ]; then echo "slurm_load_jobs error: Socket timed out" >&2; exit 1; fi
echo "$line"
""")
    script.chmod(0o755)
    return calls


def test_a_busy_controller_is_asked_again_before_a_term_is_filed_as_a_cancel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_squeue(tmp_path / "bin", ["FAIL", "FAIL", "RUNNING|0:52|1:00|"])
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setattr(slurm, "TERM_QUERY_PAUSES_S", (0.0, 0.0, 0.0))
    message, evidence = slurm.term_is_time_limit(tmp_path, _spec())
    assert message is not None and "SLURM time limit 1:00 of job 12" in message
    assert evidence["seconds_left"] == 52.0 and evidence["why"] == "time limit"
    assert len(calls.read_text().splitlines()) == 3


def test_a_term_from_a_cancelled_job_says_why_it_is_not_a_time_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_squeue(tmp_path / "bin", ["CANCELLED|0:52|1:00|"])
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    message, evidence = slurm.term_is_time_limit(tmp_path, _spec())
    assert message is None and evidence["squeue"] == "CANCELLED|0:52|1:00|"
    assert evidence["why"] == "SLURM does not say the job is still running"


def test_durations_read_as_slurm_prints_them() -> None:
    assert slurm._seconds("0:45") == 45 and slurm._seconds("1-02:03:04") == 93784
    assert slurm._seconds("UNLIMITED") is None and slurm._seconds("INVALID") is None


def test_status_without_a_reachable_slurm_falls_back_to_the_heartbeat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    spec = {"schema": contract.schema_tag("spec"), **_spec(job_id="12"),
            "heartbeat": {"interval_s": 1}}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    info = status.run_status(run_dir)
    assert info["status"] == "launching" and info["slurm_job_id"] == "12"
    assert any("SLURM could not be asked" in note for note in info["notes"])


def test_a_slurm_run_with_no_job_id_and_old_is_dead(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps({"schema": contract.schema_tag("spec"),
                                                   **_spec()}))
    old = os.stat(run_dir / "spec.json").st_mtime - 3600
    os.utime(run_dir / "spec.json", (old, old))
    info = status.run_status(run_dir)
    assert info["status"] == "dead" and "never submitted" in info["reason"]


def test_host_config_refuses_an_unknown_launcher_and_odd_sbatch_values() -> None:
    with pytest.raises(ValidationError):
        HostConfig(address="x", launcher="pbs")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        HostConfig.model_validate({"address": "x", "slurm": {"partition": "gpu; rm -rf /"}})
    with pytest.raises(ValidationError):
        HostConfig.model_validate({"address": "x", "slurm": {"extra": ["-x"]}})
    host = HostConfig.model_validate({"address": "x", "launcher": "slurm",
                                      "slurm": {"gpus": 1, "extra": ["--constraint=a100"]}})
    assert host.slurm.gpus == 1


def test_the_runs_table_shows_the_job_and_why_a_run_waits() -> None:
    from ops.cli import render

    table = render.runs_table([
        {"run_id": "a", "status": "queued", "slurm_job_id": "12",
         "slurm": {"reason": "Resources"}},
        {"run_id": "b", "status": "running", "tmux_alive": True},
        {"run_id": "c", "status": "queued", "slurm_job_id": "\x1b[2J", "slurm": {"reason": 5}}])
    lines = table.splitlines()
    assert "queued (Resources)" in lines[1] and "job 12" in lines[1]
    assert lines[2].rstrip().endswith("yes") and "\x1b" not in table


def test_a_submit_on_slurm_names_its_jobs_and_the_sweep_order() -> None:
    from ops.cli import render
    from ops.services.submit import Submitted

    sweep = Submitted(["a", "b"], ["/r/a", "/r/b"], "cluster", None, "ops", sweep_id="s",
                      slurm_job_ids=["7", "8"], parallel=True)
    text = render.submitted(sweep)
    assert "2 runs, all at once" in text and "slurm:   job 7, 8 (squeue -j 7,8)" in text
    assert "tmux" not in text and sweep.to_json()["slurm_job_ids"] == ["7", "8"]
    one = render.submitted(Submitted(["a"], ["/r/a"], "pod", "ops-a", "ops"))
    assert "tmux -L ops attach -t ops-a" in one


def test_with_the_controller_unreachable_the_clock_decides_against_the_spec_s_own_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process started more than a minute's lead ago: a TERM with a 1-minute limit
    is the limit; with a 10-hour limit it is not (and no squeue ever answered)."""
    calls = _fake_squeue(tmp_path / "bin", ["FAIL"] * 6)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setattr(slurm, "TERM_QUERY_PAUSES_S", (0.0, 0.0, 0.0))
    short = _spec()
    short["slurm"]["options"]["time"] = "00:00:01"
    message, evidence = slurm.term_is_time_limit(tmp_path, short)
    assert message is not None and "SLURM did not answer" in message
    assert evidence["squeue"] is None and "Socket timed out" in evidence["error"]
    message, evidence = slurm.term_is_time_limit(tmp_path, _spec(options={"time": "10:00:00"}))
    assert message is None and evidence["why"] == "SLURM could not be asked; the limit is not near"
    assert len(calls.read_text().splitlines()) == 6
