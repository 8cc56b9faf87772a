"""A real single-node SLURM cluster in a temp dir for the `slurm` tier (a pytest plugin).

`slurm_cluster` (session scope) starts munged on a socket of its own, slurmctld and slurmd from
Debian's packages with proctrack/linuxproc, task/none, select/cons_tres and SlurmUser=root, and
two fake GPUs (gres.conf File= entries made with `mknod X c 1 3`). The SLURM client commands
find the cluster through /etc/slurm/slurm.conf (what a login node has; an SSH login gets no
SLURM_CONF), which the fixture writes and restores afterwards. Teardown scancels every job,
waits for an empty queue and stops the daemons by pid. Without slurmctld the tier skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURMCTLD = Path("/usr/sbin/slurmctld")
SLURMD = Path("/usr/sbin/slurmd")
MUNGED = Path("/usr/sbin/munged")
ETC_CONF = Path("/etc/slurm/slurm.conf")
START_TIMEOUT_S = 20.0
NODE_CPUS = 2

_CONF = """\
ClusterName=opstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=120
KillWait=3
InactiveLimit=0
MessageTimeout=10
GresTypes=gpu
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """One running single-node cluster and what a test needs to reach it."""

    workdir: Path
    host: str
    conf: Path
    pids: list[int]

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def cmd(self, *argv: str, check: bool = True) -> str:
        done = subprocess.run(list(argv), capture_output=True, text=True, env=self.env(),
                              timeout=30, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{argv}: {done.stderr.strip()}")
        return done.stdout

    def queue(self) -> list[str]:
        return [line for line in self.cmd("squeue", "-h", "-o", "%i").split() if line]

    def job_state(self, job_id: str) -> str:
        out = self.cmd("scontrol", "show", "job", "-o", job_id, check=False)
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return ""

    def clear(self, timeout: float = 20.0) -> None:
        """scancel every job and wait for an empty queue."""
        ids = self.queue()
        if ids:
            self.cmd("scancel", *ids, check=False)
        deadline = time.monotonic() + timeout
        while self.queue() and time.monotonic() < deadline:
            time.sleep(0.2)

    def log(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


def require_slurm() -> None:
    missing = [str(p) for p in (SLURMCTLD, SLURMD, MUNGED) if not p.exists()]
    if missing or shutil.which("sbatch") is None:
        pytest.skip(f"the slurm tier needs slurmctld, slurmd, slurm-client and munge "
                    f"(missing: {', '.join(missing) or 'sbatch'}; scripts/system-deps.sh "
                    "installs them)")
    if os.geteuid() != 0:
        pytest.skip("the slurm tier starts slurmd as SlurmUser=root: run it as root (CI does)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_munge(workdir: Path) -> tuple[int, Path]:
    key_dir, sock_dir = workdir / "munge-key", workdir / "munge-run"
    key_dir.mkdir(mode=0o700)
    sock_dir.mkdir(mode=0o755)
    key = key_dir / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    sock = sock_dir / "munge.socket"
    pid_file = sock_dir / "munged.pid"
    subprocess.run([str(MUNGED), "--force", f"--socket={sock}", f"--key-file={key}",
                    f"--pid-file={pid_file}", f"--log-file={workdir / 'munged.log'}",
                    f"--seed-file={key_dir / 'seed'}"], check=True, capture_output=True,
                   timeout=15)
    return int(pid_file.read_text().split()[0]), sock


def _fake_gpus(workdir: Path) -> list[Path]:
    devices = []
    for index in range(2):
        dev = workdir / f"fakegpu{index}"
        subprocess.run(["mknod", str(dev), "c", "1", "3"], check=True, capture_output=True)
        devices.append(dev)
    return devices


def _wait_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        out = cluster.cmd("sinfo", "-h", "-o", "%T", check=False).strip()
        if out in ("idle", "mixed"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the test cluster did not come up:\n{cluster.log()}")


def _read_pid(path: Path) -> int | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().split()[0])
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def start_cluster(workdir: Path) -> Iterator[SlurmCluster]:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    munge_pid, munge_sock = _start_munge(workdir)
    pids = [munge_pid]
    devices = _fake_gpus(workdir)
    conf = workdir / "slurm.conf"
    conf.write_text(_CONF.format(host=host, ctld_port=_free_port(), slurmd_port=_free_port(),
                                 munge_socket=munge_sock, dir=workdir, cpus=NODE_CPUS))
    (workdir / "gres.conf").write_text("".join(
        f"NodeName={host} Name=gpu File={dev}\n" for dev in devices))
    saved = ETC_CONF.read_bytes() if ETC_CONF.exists() else None
    ETC_CONF.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(conf, ETC_CONF)
    cluster = SlurmCluster(workdir, host, conf, pids)
    try:
        env = cluster.env()
        subprocess.run([str(SLURMCTLD), "-i", "-f", str(conf)], env=env, check=True,
                       capture_output=True, timeout=15)
        pids.append(_read_pid(workdir / "slurmctld.pid") or 0)
        subprocess.run([str(SLURMD), "-f", str(conf)], env=env, check=True,
                       capture_output=True, timeout=15)
        pids.append(_read_pid(workdir / "slurmd.pid") or 0)
        _wait_idle(cluster)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.clear()
        _stop(pids)
        if saved is None:
            ETC_CONF.unlink(missing_ok=True)
        else:
            ETC_CONF.write_bytes(saved)


def _stop(pids: list[int]) -> None:
    for pid in reversed(pids):
        if pid <= 0:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    require_slurm()
    with start_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


if __name__ == "__main__":  # by hand: start a cluster, show it, stop it
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, start_cluster(Path(tmp) / "c") as c:
        print(c.cmd("sinfo"))
        print(c.cmd("scontrol", "show", "node"))
