"""The runner's host-side verbs that ops calls: submit, cancel, tail.

Each answers one question in one call and returns a JSON-able dict; failures raise
VerbError with a kind that the CLI maps to an exit code. A submit that ops asked to check
first (its code tree, preflight) and that fails a check answers ``{"refused": ...}`` and
creates nothing: ops then syncs the code and asks again, or reports the preflight.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any, NoReturn

from runner import contract, fields, reaper, redact, slurm, sweep, tmux
from runner.envpolicy import scrubbed_env
from runner.finish import failure_record, summary_doc, write_summary
from runner.status import SessionCache, final_summary, run_status, wrapper_alive
from runner.track import EventLog


class VerbError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # usage | not_found | conflict | failed
        self.message = message


def launch_refusal(payload: dict[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a submit checks before it creates anything, when ops asks (one round trip instead
    of one per question): that each spec's code tree is here (``need_code``: the synced
    ``code.dir``, a real directory, made whole by a rename), and preflight with the
    ``preflight`` arguments. The answer that refuses the launch, or None."""
    if payload.get("need_code") is True:
        for spec in specs:
            code_dir = fields.obj(spec, "code").get("dir")
            if not isinstance(code_dir, str) or not _is_tree(code_dir):
                return {"refused": "code_missing", "code_dir": fields.text(code_dir, 4096),
                        "message": f"no code tree at {fields.text(code_dir, 300)!s}"}
    args = payload.get("preflight")
    if args is None:
        return None
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise VerbError("usage", "preflight must be a list of the preflight verb's arguments")
    doc = _preflight(args)
    return {"refused": "preflight", "preflight": doc} if doc.get("status") == "fail" else None


def _is_tree(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


class _Arguments(argparse.ArgumentParser):
    """A bad argument is a usage error answered as JSON, never argparse's exit."""

    def error(self, message: str) -> NoReturn:
        raise VerbError("usage", f"preflight: {message}")


def _preflight(args: list[str]) -> dict[str, Any]:
    from runner import preflight  # imported only when a submit asks for it

    parser = _Arguments(prog="runner", add_help=False)
    preflight.add_verb(parser.add_subparsers(dest="verb"))
    parsed = parser.parse_args(args)
    if parsed.verb != "preflight":
        raise VerbError("usage", "preflight arguments must start with the verb `preflight`")
    return preflight.answer(parsed)


def submit(root: Path, payload: dict[str, Any]) -> dict[str, Any]:
    spec = payload.get("spec")
    secrets = _secrets(payload.get("secrets"))
    if not isinstance(spec, dict):
        raise VerbError("usage", "submit expects {'spec': {...}, 'secrets': {...}} on stdin")
    refused = launch_refusal(payload, [spec])
    if refused is not None:
        return refused
    try:
        run_id = contract.validate_run_id(spec.get("run_id", ""))
        run_dir = contract.make_run_dir(root, run_id)
    except contract.RunDirExists as exc:
        raise VerbError("conflict", str(exc)) from exc
    except contract.ContractError as exc:
        raise VerbError("usage", str(exc)) from exc
    spec["created_at"] = contract.iso()  # the host's clock, like every later timestamp
    spec["inherited_env"] = scrubbed_env()  # this submit's environment, not tmux's
    if not isinstance(spec.get("tmux"), dict):
        spec["tmux"] = {}
    socket = spec["tmux"].get("socket") or "ops"
    on_slurm = slurm.is_slurm(spec)
    session = None if on_slurm else tmux.free_session_name(run_id, run_dir, socket)
    if session is not None:
        spec["tmux"]["session"] = session
    sweep_stale_stores(root)
    key = None
    jobs: list[str] = []
    try:
        key = redact.place_store(spec, secrets, root)
        contract.atomic_write_json(run_dir / contract.SPEC, spec)
        if on_slurm:
            jobs = launch_slurm([run_dir], [spec], parallel=True)
        else:
            tmux.launch_wrapper(run_dir, socket, str(session))
    except Exception as exc:
        redact.discard_store(spec)
        if not (run_dir / contract.SPEC).exists():
            _write_spec_anyway(run_dir, spec)
        _record_launch_failure(run_dir, run_id, f"launch failed: {exc}", key)
        raise VerbError("failed", f"could not launch {run_id}: {exc}") from exc
    answer = {"run_id": run_id, "run_dir": str(run_dir), "tmux_session": session,
              "tmux_socket": socket}
    if on_slurm:
        answer.update(launcher="slurm", slurm_job_id=jobs[0])
    return answer


def launch_slurm(run_dirs: list[Path], specs: list[dict[str, Any]], *,
                 parallel: bool) -> list[str]:
    """sbatch each run held (in order, each after the previous one ends unless ``parallel``),
    record its job id in spec.json and the events, then release them all. On a failure the
    jobs already made are cancelled and the error is raised."""
    jobs: list[str] = []
    try:
        for run_dir, spec in zip(run_dirs, specs, strict=True):
            dependency = f"afterany:{jobs[-1]}" if jobs and not parallel else None
            job = slurm.submit_held(run_dir, spec, dependency=dependency)
            jobs.append(job)
            contract.atomic_write_json(run_dir / contract.SPEC, spec)
            EventLog(run_dir / contract.EVENTS, run_dir.name, source="runner").emit(
                "slurm_submitted", job_id=job, dependency=dependency,
                argv=slurm.block(spec).get("argv"))
        slurm.release(jobs)
    except (slurm.SlurmError, OSError) as exc:
        for job in jobs:
            with contextlib.suppress(slurm.SlurmError):
                slurm.scancel(job)
        raise RuntimeError(str(exc)) from exc
    return jobs


def _secrets(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise VerbError("usage", "secrets must be an object of name -> string value")
    return {str(k): v for k, v in value.items()}


def _write_spec_anyway(run_dir: Path, spec: dict[str, Any]) -> None:
    """A run dir that failed to launch still says what it was (no store, no seal)."""
    spec = {**spec, "secrets": {**spec.get("secrets", {}), "store": None}}
    spec.pop("seal", None)
    with contextlib.suppress(OSError, ValueError):
        contract.atomic_write_json(run_dir / contract.SPEC, spec)


def sweep_stale_stores(root: Path) -> list[str]:
    """Delete secret stores under ``root/.secrets`` and of this root's runs whose wrapper will
    never take them (the run ended or is dead): a stale store never blocks a run."""
    removed: list[str] = []
    store_dir = root / redact.STORE_DIR
    if not store_dir.is_dir():
        return removed
    sessions = SessionCache()  # one tmux and one SLURM query for every store, not one each
    for path in store_dir.glob("*.json"):
        run_dir = root / path.stem
        if not contract.RUN_ID_RE.fullmatch(path.stem) or not run_dir.is_dir():
            continue
        ended = (*contract.RECORDED_STATUSES, "dead", "invalid")
        if run_status(run_dir, sessions=sessions).get("status") in ended:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.stem)
    return removed


def submit_sweep(root: Path, payload: dict[str, Any]) -> dict[str, Any]:
    specs = payload.get("specs")
    sweep_id = payload.get("sweep_id")
    if not isinstance(specs, list) or not specs or not isinstance(sweep_id, str) \
            or not all(isinstance(s, dict) for s in specs):
        raise VerbError("usage", "submit-sweep expects {'sweep_id', 'specs': [...], "
                                 "'member_secrets': {run_id: {...}}}")
    member_secrets = payload.get("member_secrets") or {}
    if not isinstance(member_secrets, dict):
        raise VerbError("usage", "member_secrets must map run ids to secrets")
    secrets = {str(s.get("run_id")): _secrets(member_secrets.get(str(s.get("run_id"))))
               for s in specs}
    grid = payload.get("grid")
    if grid is not None and not isinstance(grid, dict):
        raise VerbError("usage", "grid must be an object (the sweep's --set grid)")
    refused = launch_refusal(payload, specs)
    if refused is not None:
        return refused
    try:
        run_dirs = sweep.create(root, sweep_id, specs, secrets, grid=grid)
    except contract.RunDirExists as exc:
        raise VerbError("conflict", str(exc)) from exc
    except contract.ContractError as exc:
        raise VerbError("usage", str(exc)) from exc
    if slurm.is_slurm(specs[0]):
        return _launch_slurm_sweep(sweep_id, run_dirs, specs,
                                   parallel=payload.get("parallel") is True
                                   or slurm.block(specs[0]).get("parallel") is True)
    try:
        session = sweep.launch(root, sweep_id)
    except Exception as exc:
        raise _sweep_not_launched(sweep_id, run_dirs, specs, f"tmux launch failed: {exc}") \
            from exc
    return {"sweep_id": sweep_id, "run_ids": [d.name for d in run_dirs],
            "run_dirs": [str(d) for d in run_dirs], "tmux_session": session,
            "tmux_socket": specs[0].get("tmux", {}).get("socket") or "ops"}


def _launch_slurm_sweep(sweep_id: str, run_dirs: list[Path], specs: list[dict[str, Any]], *,
                        parallel: bool) -> dict[str, Any]:
    """Each member its own SLURM job: in order (afterany on the previous) or all at once."""
    try:
        jobs = launch_slurm(run_dirs, specs, parallel=parallel)
    except Exception as exc:
        raise _sweep_not_launched(sweep_id, run_dirs, specs, f"sbatch failed: {exc}") from exc
    return {"sweep_id": sweep_id, "run_ids": [d.name for d in run_dirs],
            "run_dirs": [str(d) for d in run_dirs], "tmux_session": None,
            "tmux_socket": specs[0].get("tmux", {}).get("socket") or "ops",
            "launcher": "slurm", "slurm_job_ids": jobs, "parallel": parallel}


def _sweep_not_launched(sweep_id: str, run_dirs: list[Path], specs: list[dict[str, Any]],
                        message: str) -> VerbError:
    """Every member of a sweep that could not be launched ends failed (sealed), its secret
    store deleted; the error to raise."""
    for run_dir, spec in zip(run_dirs, specs, strict=True):
        _record_launch_failure(run_dir, run_dir.name, message, redact.peek_seal(spec))
        redact.discard_store(spec)
    return VerbError("failed", f"could not launch sweep {sweep_id}: {message}")


def _record_launch_failure(run_dir: Path, run_id: str, message: str,
                           key: str | None) -> None:
    now = time.time()
    write_summary(run_dir, summary_doc(
        run_id, status="failed", started=now, ended=now, written_by="runner",
        failure=failure_record("launch", message), seal=key))


def cancel(run_dir: Path, wait_s: float = 60.0) -> dict[str, Any]:
    """Ask the wrapper to stop the workload (it escalates SIGINT, SIGTERM, SIGKILL, then ends
    every process the workload left) and wait until the wrapper has sealed the run and exited.
    A run whose wrapper is gone is only touched when its processes provably belong to it."""
    before = run_status(run_dir)
    if final_summary(run_dir) is not None:
        return {**before, "cancelled": False, "message": f"run already {before['status']}"}
    spec = contract.read_json_or_none(run_dir / contract.SPEC)
    if slurm.is_slurm(spec):
        return _cancel_slurm(run_dir, spec or {}, wait_s)
    meta = contract.read_json_or_none(run_dir / contract.METADATA)
    if meta is None and before["status"] == "queued" and sweep.claim(run_dir):
        sweep.record_cancelled_while_queued(run_dir)
        return {**run_status(run_dir), "cancelled": True, "message": "cancelled while queued"}
    if meta is None:
        raise VerbError("failed", f"{run_dir.name} has not started yet ({before['status']}); "
                                  "try again in a few seconds")
    process = fields.obj(meta, "process")
    recorded_boot = fields.obj(meta, "host").get("boot_id")
    alive, reason = wrapper_alive(process, contract.boot_id(), recorded_boot)
    # the process table names the wrapper even when the workload rewrote run_metadata.json
    pid = reaper.live_wrappers().get(os.path.realpath(run_dir)) or \
        (int(process["pid"]) if alive else None)
    if pid is None:
        return {**run_status(run_dir), "cancelled": False,
                "message": f"wrapper is not running ({reason}); "
                           + _end_orphans(run_dir, process, recorded_boot)}
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if final_summary(run_dir) is not None:
            break
        time.sleep(0.1)
    return {**run_status(run_dir), "cancelled": True}


def _cancel_slurm(run_dir: Path, spec: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """TERM to the batch step (the wrapper) with `scancel --batch`, and a plain scancel when
    the wrapper has not ended the job within ``wait_s``; a job still queued is scancelled and
    its run recorded killed once SLURM has let go of it."""
    job = slurm.job_id(spec)
    if job is None:
        raise VerbError("failed", f"{run_dir.name} has no SLURM job yet; try again shortly")
    slurm.mark_cancel(run_dir)
    try:
        state = slurm.query([job]).get(job)
        if state is not None and state.waiting:
            slurm.scancel(job)
        elif state is not None and state.active:
            slurm.scancel(job, batch_term=True)
    except slurm.SlurmError as exc:
        raise VerbError("failed", f"SLURM refused to cancel job {job}: {exc}") from exc
    deadline = time.time() + wait_s
    forced = False
    while True:
        try:
            current = slurm.query([job]).get(job)
        except slurm.SlurmError:
            current = None
        if current is None or not current.active:
            break
        if time.time() >= deadline and not forced:
            with contextlib.suppress(slurm.SlurmError):
                slurm.scancel(job)  # the wrapper did not end in time: SLURM ends the job
            forced, deadline = True, time.time() + wait_s
        elif time.time() >= deadline:
            break
        time.sleep(0.2)
    if contract.read_runner_summary(run_dir) is None and (current is None or not current.active):
        _record_cancelled_job(run_dir, spec, job)
    return {**run_status(run_dir), "cancelled": True, "slurm_job_id": job,
            "message": "scancel --batch --signal=TERM" + (", then scancel" if forced else "")}


def _record_cancelled_job(run_dir: Path, spec: dict[str, Any], job: str) -> None:
    """A job SLURM ended before its wrapper wrote a summary (cancelled while queued, or
    before the wrapper was up): every process of it is gone, so the runner records it."""
    now = time.time()
    key = redact.peek_seal(spec)
    redact.discard_store(spec)
    write_summary(run_dir, summary_doc(
        run_dir.name, status="killed", started=now, ended=now, written_by="runner",
        failure=failure_record("cancelled", f"SLURM job {job} cancelled before its wrapper "
                                            "wrote a summary"), seal=key))


def _end_orphans(run_dir: Path, process: dict[str, Any], recorded_boot: Any) -> str:
    """What a dead wrapper left running: only on the boot it ran on, the recorded workload
    leader if pid *and* start time match, and processes whose environment names this run."""
    if not isinstance(recorded_boot, str) or recorded_boot != contract.boot_id():
        return "the host rebooted since (or the boot is unknown): nothing was signalled"
    leader = reaper.same_process(process.get("workload_pid"), process.get("workload_start_time"))
    found = reaper.run_processes(str(run_dir.resolve()), leader)
    if not found:
        return "no process of the run is left; nothing was signalled"
    killed = reaper.kill_all(found, lambda text: text)
    EventLog(run_dir / contract.EVENTS, run_dir.name, source="runner").emit(
        "leftover_processes", how="cancel_after_wrapper_death", action="SIGKILL",
        processes=killed[:100], count=len(killed))
    return f"ended {len(killed)} process(es) it left behind"


def tail(run_dir: Path, offset: int | None, max_bytes: int, lines: int | None) -> dict[str, Any]:
    """Bytes of stdout.log from ``offset`` (or the start of the last ``lines`` lines)."""
    if not (run_dir / contract.SPEC).exists():
        raise VerbError("not_found", f"no run at {run_dir}")
    log = run_dir / contract.STDOUT_LOG
    ended = final_summary(run_dir) is not None
    try:
        with contract.open_regular(log) as fh:
            size = os.fstat(fh.fileno()).st_size
            start = _start_of_last_lines(fh, size, lines) if offset is None else offset
            start = min(max(0, start), size)
            fh.seek(start)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        size, start, data = 0, 0, b""
    except contract.ContractError as exc:
        raise VerbError("failed", f"{run_dir.name}: stdout.log cannot be read: {exc}") from exc
    status = run_status(run_dir) if ended or not data else None
    return {"run_id": run_dir.name, "offset": start, "next_offset": start + len(data),
            "size": size, "data_b64": base64.b64encode(data).decode(), "ended": ended,
            "status": status}


def _start_of_last_lines(fh: Any, size: int, lines: int | None) -> int:
    if not lines or lines <= 0:
        return 0 if lines is None else size
    window = min(size, 256 * 1024)
    fh.seek(size - window)
    data = fh.read(window)
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(lines):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return size - window
    return size - window + cut + 1
