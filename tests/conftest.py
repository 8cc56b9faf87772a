"""Shared fixtures: a hermetic home, a throwaway project with its own tmux socket, and `ops`.

Every test gets HOME and the XDG dirs pinned to a temp dir (so no ~/.ssh/config, ~/.netrc or
real outputs leak in). Tests of the tmux tier start a real tmux server on a private socket and
kill it afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.sshd_fixture"]

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = REPO / "tests" / "workloads"


@pytest.fixture(scope="session", autouse=True)
def interruptible_children() -> None:
    """Ctrl-C reaches the processes the tests start. A shell starts a background job (`make
    test &`, nohup) with SIGINT ignored, children inherit an ignored signal across exec, and an
    interpreter that starts with SIGINT ignored never raises KeyboardInterrupt: every test that
    Ctrl-Cs an `ops` process would hang. A handler of our own is reset to the default on exec."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def compiled_sources() -> None:
    """Byte-compile ops and runner once per worker: the suite starts `python -m ops` and
    `python -m runner` hundreds of times, and where PYTHONDONTWRITEBYTECODE is set (as on this
    machine) each of them would otherwise compile every module it imports again."""
    import compileall

    for package in ("ops", "runner"):
        compileall.compile_dir(REPO / package, quiet=1)


@pytest.fixture(autouse=True)
def hermetic_home(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(name, str(home / f".{name.lower()}"))
    for name in ("OPS_PROJECT_CONFIG", "SSH_AUTH_SOCK", "WANDB_API_KEY", "TMUX", "XDG_RUNTIME_DIR",
                 "OPS_SSH_MUX", "OPS_RUNNER_SERVE"):
        monkeypatch.delenv(name, raising=False)
    # masters and the resident runners they reach go after a minute idle, not five: a test
    # is done with its pod long before that, and hundreds of them would otherwise pile up
    monkeypatch.setenv("OPS_SSH_MUX_IDLE", "60")
    return home


@pytest.fixture(scope="session", autouse=True)
def resident_runners_stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The resident runners (runner.serve) of this session's pods end with it."""
    yield
    import psutil

    base = str(tmp_path_factory.getbasetemp())
    for proc in psutil.process_iter(["cmdline", "environ"]):
        runner_dir = (proc.info["environ"] or {}).get("OPS_RUNNER_DIR", "")
        if (proc.info["cmdline"] or [])[1:4] == ["-m", "runner", "serve"] and \
                runner_dir.startswith(base):
            with contextlib.suppress(psutil.Error):
                proc.terminate()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Project:
    root: Path
    runs: Path
    socket: str
    config_path: Path

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def write_config(self, doc: dict[str, Any]) -> None:
        self.config_path.write_text(json.dumps(doc, indent=2))

    def ops(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 90) -> Result:
        full_env = {**os.environ, "OPS_PROJECT_CONFIG": str(self.config_path), **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "ops", *args], cwd=self.root,
                              capture_output=True, text=True, env=full_env, timeout=timeout,
                              check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout} s")

    def summary(self, run_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.run_dir(run_id) / "summary.json").read_text())
        return doc


def _preset(command: list[str], **extra: Any) -> dict[str, Any]:
    return {"kind": "command", "command": command, "limits": {"grace_sec": 1}, **extra}


PROJECT_NAME = "test-proj"


def pod_config(project: Project, address: str, tmp_path: Path) -> dict[str, Any]:
    """The test project's config with host `pod` as its default: this machine through the
    loopback sshd at ``address``, its own outputs root and ops home under ``tmp_path``, and this
    venv's interpreter (it has psutil, so no venv is made there)."""
    doc = base_config(project.runs, project.socket)
    doc["hosts"] = {"pod": {"address": address, "outputs_dir": str(tmp_path / "pod-runs"),
                            "ops_home": str(tmp_path / "pod-home"), "python": sys.executable}}
    doc["project"]["default_host"] = "pod"
    return doc


def git(repo: Path, *args: str) -> str:
    """git in ``repo`` with a fixed test identity; its stdout, stripped."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def base_config(runs: Path, socket: str) -> dict[str, Any]:
    """The test project; ``runs`` is host `local`'s outputs root, which is always
    ``<local_outputs_dir>/<project name>``."""
    if runs.name != PROJECT_NAME:
        raise ValueError(f"a local outputs root ends in the project's name: {runs}")
    toy = str(REPO / "examples" / "toy_train.py")
    data = str(REPO / "examples" / "data")
    return {
        "project": {"name": PROJECT_NAME, "local_outputs_dir": str(runs.parent)},
        "tmux": {"socket": socket, "watch_interval_sec": 0.3, "stall_after_intervals": 3},
        "presets": {
            "toy": _preset(["{python}", toy, "--data={data_dir}/points.csv"],
                           overrides={"max_iters": 15, "sleep": 0.0},
                           dataset={"name": "points", "dir": data}, best={"loss": "min"}),
            "slow": _preset(["{python}", toy, "--data={data_dir}/points.csv"],
                            overrides={"max_iters": 100000, "sleep": 0.05},
                            dataset={"name": "points", "dir": data}),
            "exit3": _preset(["{python}", toy, "--data={data_dir}/points.csv"],
                             overrides={"max_iters": 3, "exit_code": 3},
                             dataset={"name": "points", "dir": data}),
            "stubborn": _preset(["{python}", str(WORKLOADS / "ignore_sigint.py")]),
            "printer": _preset(["{python}", "-c",
                                "for i in range(1, 6): print(f'iter {i}: loss {1 / i:.3f}')"],
                               metrics_from_stdout=[
                                   {"pattern": r"iter (?P<step>\d+): loss (?P<loss>[0-9.]+)"}]),
            "impostor": _preset(["{python}", str(WORKLOADS / "impostor.py")],
                               overrides={"exit": 0}),
            "resumable": _preset(["{python}", "-c",
                                  "import os, sys; print('resume', os.environ.get("
                                  "'OPS_RESUME_FROM'), sys.argv[1:])"],
                                 overrides={"resume_from": "", "lr": 0.1},
                                 resume_override="resume_from"),
            "pair": {"kind": "sweep", "members": ["printer", "toy"]},
            "slowpair": {"kind": "sweep", "members": ["slow", "toy"]},
            "hog": _preset(["{python}", str(WORKLOADS / "hog.py")],
                           limits={"grace_sec": 1, "rss_limit_mb": 200}),
        },
    }


@pytest.fixture
def wrapper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process to stand in for a run's wrapper (its pid and start time are real)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _tmux_available() -> bool:
    return shutil.which("tmux") is not None


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    if not _tmux_available():
        pytest.skip("tmux is not installed (CI installs it)")
    root = tmp_path / "repo"
    (root / "configs" / "ops").mkdir(parents=True)
    runs = root / "runs" / PROJECT_NAME  # the default: <repo>/runs/<name>
    socket = f"ops-test-{secrets.token_hex(4)}"
    proj = Project(root, runs, socket, root / "configs" / "ops" / "project.json")
    proj.write_config(base_config(runs, socket))
    yield proj
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def _uses_tmux_project(item: pytest.Item) -> bool:
    """Whether the `project` fixture a test gets (directly or through another fixture) is this
    module's tmux project, not a test module's own fixture of the same name."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get("project", ()) if info is not None else ()
    if not defs:
        return False
    func = defs[-1].func  # the last definition is the one that applies to this test
    return getattr(func, "__module__", None) == __name__ and func.__name__ == "project"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_tmux_project(item):
            item.add_marker(pytest.mark.tmux)


# Under CI=true a skipped test fails instead: a tier whose binary went missing (sshd moved,
# tmux not installed) must not vanish silently. CI installs every tier's tools, so no skip is
# expected there; a reason listed here (a substring of the skip reason) would be allowed.
ALLOWED_CI_SKIPS: tuple[str, ...] = ()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(allowed in reason for allowed in ALLOWED_CI_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, which installs every tier: {reason}\n"
                       "(install what it needs, or list the reason in ALLOWED_CI_SKIPS in "
                       "tests/conftest.py)")
