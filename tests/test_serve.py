"""The resident runner (runner.serve) and ops' way to it (ops.hosts.served).

Against a real sshd on loopback: after one exec, runner verbs go through the master's stream
forward to the resident runner (counted in the sshd's own log), give the same answers, and a
killed resident runner costs one exec and comes back. Without sshd: the socket is private,
another uid gets no word, unsafe directories are refused, bad requests leave it serving, it
exits when idle, the parent never holds a submit's secret, and a lost answer is never run twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ops.hosts import served
from ops.hosts.base import ConnectionLostError, ExecResult
from ops.hosts.mux import Mux, MuxTarget
from runner import serve

from .conftest import REPO, Project, git, pod_config
from .sshd_fixture import SshAlias, Sshd, hanging_up, served_requests

CANARY = "serve-canary-5d0b8e1f"


# -- a resident runner started here ------------------------------------------------------------

def start_daemon(path: Path, idle: float = 30.0,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", str(path), "--idle",
                             str(idle)], cwd=REPO, env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not serve.listening(str(path)):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the resident runner did not start listening"
        time.sleep(0.02)
    return proc


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    path = tmp_path / "serve" / "r.sock"
    proc = start_daemon(path)
    yield path, proc
    proc.terminate()
    proc.wait(10)


def ask(path: Path, argv: list[str], stdin: bytes = b"") -> tuple[dict[str, Any], bytes]:
    """One request by hand: (the answer header, stdout and stderr)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        assert serve.hello_ok(json.loads(reader.readline()))
        sock.sendall(json.dumps({"argv": argv, "stdin_len": len(stdin)}).encode() + b"\n"
                     + stdin)
        head = json.loads(reader.readline())
        return head, reader.read()


def test_the_socket_is_private_and_answers_as_the_runner_would(
        daemon: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    path, _ = daemon
    assert stat.S_IMODE(path.parent.lstat().st_mode) == 0o700
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    (tmp_path / "runs").mkdir()
    head, body = ask(path, ["status", str(tmp_path / "runs")])
    direct = subprocess.run([sys.executable, "-m", "runner", "status", str(tmp_path / "runs")],
                            cwd=REPO, capture_output=True, check=False)
    assert head == {"exit": 0, "stdout_len": len(direct.stdout), "stderr_len": 0}
    assert json.loads(body) == json.loads(direct.stdout)
    head, body = ask(path, ["show", str(tmp_path / "runs" / "nope"), "spec.json"])
    assert head["exit"] == 3 and json.loads(body)["error"]["kind"] == "not_found"


def test_another_uid_gets_no_word() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to act as another uid")  # CI runs as root
    # outside pytest's own 0700 temp dirs, so that the other user can reach the socket at all
    top = Path(tempfile.mkdtemp(prefix="ops-serve-test-"))
    os.chmod(top, 0o755)  # noqa: S103 - the other user must reach the socket
    path = top / "serve" / "r.sock"
    proc = start_daemon(path)
    try:
        # open what the daemon closed: only its SO_PEERCRED check is left
        os.chmod(path.parent, 0o755)  # noqa: S103
        os.chmod(path, 0o666)  # noqa: S103
        assert another_user_hears(path) == b"closed"
        assert ask(path, ["version"])[0]["exit"] == 0  # and it still serves its own user
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(top)


def another_user_hears(path: Path) -> bytes:
    """What uid 65534 reads on connecting to ``path``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user
        os.close(read)
        said = b"no connect"
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                said = sock.recv(100) or b"closed"
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            said = repr(exc).encode()
        os.write(write, said)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as fh:
        return fh.read()


def test_unsafe_directories_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    if os.getuid() == 0:
        os.chown(foreign, 65534, 65534)
        refused = subprocess.run([sys.executable, "-m", "runner", "serve",
                                  str(foreign / "r.sock")], cwd=REPO, capture_output=True,
                                 text=True, check=False, timeout=60)
        assert refused.returncode == 4, refused
        assert "is not a directory of uid 0" in json.loads(refused.stdout)["error"]["message"]
        assert not (foreign / "r.sock").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    refused = subprocess.run([sys.executable, "-m", "runner", "serve",
                              str(tmp_path / "link" / "r.sock")], cwd=REPO,
                             capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode == 4 and not (tmp_path / "real" / "r.sock").exists()


def test_bad_requests_get_no_work_done_and_it_serves_on(
        daemon: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    path, proc = daemon
    head, body = ask(path, ["exec", str(tmp_path)])
    assert head["exit"] == 2 and b"not served here" in body
    head, body = ask(path, ["--serve", str(tmp_path / "x.sock"), "version"])
    assert head["exit"] == 2 and not (tmp_path / "x.sock").exists()
    for junk in (b"not json\n", b'{"argv": "version", "stdin_len": 0}\n',
                 b'{"argv": ["version"], "stdin_len": -1}\n',
                 b'{"argv": ["version"], "stdin_len": 10}\nshort', b"x" * 70000):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(path))
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            try:
                said = reader.read()
            except ConnectionResetError:  # closed with junk still unread: Linux says reset
                said = b""
            assert said == b"", junk[:40]  # closed without an answer
    head, body = ask(path, ["version"])
    assert head["exit"] == 0 and json.loads(body)["schema"] == "ops.runner_version/1"
    assert proc.poll() is None


def test_a_command_is_answered_as_an_exec_would(
        daemon: tuple[Path, subprocess.Popen[bytes]]) -> None:
    path, _ = daemon
    head, body = ask(path, ["command", "sh", "-c", "cat; echo oops >&2; exit 3"], b"in\x00put")
    assert head == {"exit": 3, "stdout_len": 6, "stderr_len": 5} and body == b"in\x00putoops\n"
    head, body = ask(path, ["command", "/no/such/tool"])
    assert head["exit"] == 127 and b"/no/such/tool" in body
    head, _ = ask(path, ["command", "sh", "-c", "kill -TERM $$"])
    assert head["exit"] == 128 + signal.SIGTERM


def test_it_exits_when_idle_and_takes_its_socket_along(tmp_path: Path) -> None:
    path = tmp_path / "s" / "r.sock"
    proc = start_daemon(path, idle=1.0)
    assert proc.wait(30) == 0
    assert not path.exists()


def test_one_daemon_a_socket(daemon: tuple[Path, subprocess.Popen[bytes]]) -> None:
    path, first = daemon
    second = subprocess.run([sys.executable, "-m", "runner", "serve", str(path)], cwd=REPO,
                            capture_output=True, text=True, check=False, timeout=60)
    assert second.returncode == 4 and "another daemon" in second.stdout
    assert first.poll() is None and ask(path, ["version"])[0]["exit"] == 0


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable, writable mapping of the process holds ``needle`` (root)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            with contextlib.suppress(OSError, ValueError, OverflowError):
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
    return False


def test_a_submits_secret_lives_only_in_the_child_that_handled_it(
        daemon: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("reading another process's memory needs root")  # CI runs as root
    path, proc = daemon
    payload = {"spec": {"run_id": "../escape"}, "secrets": {"WANDB_API_KEY": CANARY}}
    head, body = ask(path, ["submit", str(tmp_path / "runs")], json.dumps(payload).encode())
    assert head["exit"] == 2 and b"escape" in body  # refused: a bad run id
    assert not memory_holds(proc.pid, CANARY.encode())
    assert not memory_holds(proc.pid, b"serve-canary")  # not even a piece of it
    assert CANARY not in " ".join(psutil.Process(proc.pid).cmdline())


# -- ops' side, against stand-in sockets --------------------------------------------------------

@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Served whose exec and forward are recorded instead of run."""
    mux_dir = Path(tempfile.mkdtemp(prefix="ops-mux-test-"))  # short: it holds sockets
    target = MuxTarget("127.0.0.1", 22, "u", (), True, None, "127.0.0.1")
    mux = Mux(target, [], mux_dir)
    one = served.Served(mux, "pod")
    calls: list[tuple[str, ...]] = []

    def fake_exec(argv: Any, input_text: Any, timeout: Any) -> ExecResult:
        calls.append(tuple(argv))
        return ExecResult("pod", tuple(argv), 0, '{"ok": 1}\n', "")

    monkeypatch.setattr(one, "_exec", fake_exec)
    monkeypatch.setattr(mux, "forward", lambda *a, cancel=False: calls.append(
        ("cancel",) if cancel else ("forward",)) or True)
    one.calls = calls  # type: ignore[attr-defined]
    yield one
    shutil.rmtree(mux_dir)


RUNNER = ("env", "PYTHONPATH=/h/.ops/runner/b1", "OPS_RUNNER_DIR=/h/.ops/runner/b1",
          "python3", "-m", "runner")


@contextlib.contextmanager
def stand_in(path: Path, behave: str) -> Iterator[list[bytes]]:
    """A socket where the forward would be: `hangup` closes at once (no hello), `drop`
    says hello, takes the request, and closes without an answer."""
    heard: list[bytes] = []

    def drop(conn: socket.socket) -> None:
        conn.sendall(json.dumps({"schema": serve.SCHEMA}).encode() + b"\n")
        heard.append(conn.recv(1 << 16))

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)
        with hanging_up(listener, drop if behave == "drop" else None):
            yield heard


def local_path(one: served.Served) -> Path:
    paths = one._paths(RUNNER)
    assert paths is not None
    return paths[0]


def test_no_forward_yet_means_exec_that_starts_one(client: Any) -> None:
    result = client.call(RUNNER, ["status", "/runs"], None, None)
    assert result.stdout == '{"ok": 1}\n'
    remote = served.remote_socket(RUNNER)
    assert remote == f"/h/.ops/serve/{remote.rsplit('/', 1)[1]}"
    assert client.calls == [(*RUNNER, "--serve", remote, "--serve-idle", "60", "status", "/runs"),
                            ("forward",), ("cancel",), ("forward",)]  # no socket: let go, again


def test_a_lost_answer_is_never_run_twice(client: Any) -> None:
    with stand_in(local_path(client), "drop") as heard:
        with pytest.raises(ConnectionLostError, match="may have run"):
            client.call(RUNNER, ["submit", "/runs"], '{"secrets": {}}', 10)
        assert client.calls == [] and b'"submit"' in heard[0]
        # a question is only read: it is asked again over exec
        assert client.call(RUNNER, ["status", "/runs"], None, 10).stdout == '{"ok": 1}\n'
        assert client.calls == [(*RUNNER, "--serve", served.remote_socket(RUNNER),
                                 "--serve-idle", "60", "status", "/runs")]


def test_a_host_that_never_says_hello_is_given_up_on_for_this_master(client: Any) -> None:
    with stand_in(local_path(client), "hangup"):
        for _ in range(3):
            client.call(RUNNER, ["status", "/runs"], None, 10)
    serving = [c for c in client.calls if "--serve" in c]
    assert len(serving) == served.MAX_MISSES and len(client.calls) == 3  # then plain exec
    assert client.calls[-1] == (*RUNNER, "status", "/runs")


def test_commands_never_give_up_on_a_resident_runner_that_is_only_gone(client: Any) -> None:
    with stand_in(local_path(client), "hangup"):
        for _ in range(3):  # a resident runner gone idle: commands fall back, count nothing
            assert client.command(RUNNER, ["true"], None) is None
        client.call(RUNNER, ["status", "/runs"], None, 10)  # this one restarts it
    assert client.calls[-1][-4:] == ("--serve-idle", "60", "status", "/runs")


def test_verbs_it_does_not_take_and_builds_it_cannot_name_go_over_exec(client: Any) -> None:
    client.call(RUNNER, ["exec", "/runs/x"], None, None)
    client.call(("python3", "-m", "runner"), ["status", "/runs"], None, None)
    assert client.calls == [(*RUNNER, "exec", "/runs/x"), ("python3", "-m", "runner", "status",
                                                            "/runs")]


def test_a_long_ops_home_gets_a_private_dir_in_tmp() -> None:
    home = "/" + "x" * 90
    runner = ("env", f"OPS_RUNNER_DIR={home}/runner/b1", "python3", "-m", "runner")
    remote = served.remote_socket(runner)
    assert remote is not None and remote.startswith("/tmp/ops-serve-") and len(remote) < 100


# -- through a real sshd ------------------------------------------------------------------------

def round_trips(sshd: Sshd, tmp_path: Path) -> tuple[int, int]:
    """(execs in the sshd's log, requests the pod's resident runner answered) so far."""
    return (sshd.log().count("Starting session: command"),
            served_requests(tmp_path / "pod-home"))


@pytest.fixture
def pod(project: Project, ssh_alias: SshAlias, tmp_path: Path) -> Project:
    doc = pod_config(project, ssh_alias.name, tmp_path)
    doc["presets"]["hello"] = {"kind": "command", "limits": {"grace_sec": 1},
                               "command": ["echo", "hello"], "secrets_env": ["OPS_TEST_TOKEN"]}
    project.write_config(doc)
    project.runs = tmp_path / "pod-runs"
    (project.root / ".gitignore").write_text("/.ops/\n/runs/\n")
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "A")
    return project


def daemons_of(tmp_path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        cmdline = proc.info["cmdline"] or []
        runner_dir = (proc.info["environ"] or {}).get("OPS_RUNNER_DIR", "")
        if cmdline[1:4] == ["-m", "runner", "serve"] and runner_dir.startswith(str(tmp_path)):
            found.append(proc)
    return found


@pytest.mark.ssh
@pytest.mark.tmux
def test_after_one_exec_runner_verbs_go_through_the_resident_runner(
        pod: Project, sshd: Sshd, tmp_path: Path) -> None:
    first = pod.ops("run", "submit", "-p", "hello", "--run-id", "r0", "--json",
                    env={"OPS_TEST_TOKEN": CANARY})  # the runner's check, the code's sync
    assert first.exit_code == 0, first.stderr
    execs, forwarded = round_trips(sshd, tmp_path)
    submitted = pod.ops("run", "submit", "-p", "hello", "--run-id", "r1", "--json",
                        env={"OPS_TEST_TOKEN": CANARY})
    assert submitted.exit_code == 0, submitted.stderr
    assert round_trips(sshd, tmp_path) == (execs, forwarded + 1)  # a warm submit: no exec at all
    pod.wait_for((pod.runs / "r1" / "summary.json").exists, timeout=60)
    assert (pod.runs / "r1" / "stdout.log").read_text() == "hello\n"
    through = pod.ops("run", "status", "r1", "--json")  # two runner calls: status, show
    assert round_trips(sshd, tmp_path) == (execs, forwarded + 3)
    plain = pod.ops("run", "status", "r1", "--json", env={"OPS_RUNNER_SERVE": "0"})
    assert round_trips(sshd, tmp_path) == (execs + 2, forwarded + 3)
    assert through.exit_code == plain.exit_code == 0
    one, other = through.json(), plain.json()
    for doc in (one, other):  # how old the last heartbeat is: the one thing that moves
        doc["runs"][0]["heartbeat"].pop("age_s")
    assert one == other
    (daemon,) = daemons_of(tmp_path)
    assert CANARY not in json.dumps(daemon.environ()) + " ".join(daemon.cmdline())
    assert os.getuid() != 0 or not memory_holds(daemon.pid, CANARY.encode())


@pytest.mark.ssh
@pytest.mark.tmux
def test_a_killed_resident_runner_costs_one_exec_and_comes_back(
        pod: Project, sshd: Sshd, tmp_path: Path) -> None:
    assert pod.ops("run", "status", "--json").exit_code == 0
    pod.wait_for(lambda: len(daemons_of(tmp_path)) == 1)
    (daemon,) = daemons_of(tmp_path)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    execs, forwarded = round_trips(sshd, tmp_path)
    again = pod.ops("run", "status", "--json")
    assert again.exit_code == 0 and again.stderr == ""
    assert round_trips(sshd, tmp_path) == (execs + 1, forwarded)  # no hello, so exec
    pod.wait_for(lambda: len(daemons_of(tmp_path)) == 1)
    assert daemons_of(tmp_path)[0].pid != daemon.pid
    assert pod.ops("run", "status", "--json").exit_code == 0
    assert round_trips(sshd, tmp_path) == (execs + 1, forwarded + 1)


@pytest.mark.ssh
@pytest.mark.tmux
def test_a_new_commit_is_synced_and_launched_without_an_exec(
        pod: Project, sshd: Sshd, tmp_path: Path) -> None:
    first = pod.ops("run", "submit", "-p", "hello", "--run-id", "r0",
                    env={"OPS_TEST_TOKEN": CANARY})
    assert first.exit_code == 0, first.stderr
    (pod.root / "new.txt").write_text("B\n")
    git(pod.root, "add", "-A")
    git(pod.root, "commit", "-q", "-m", "B")
    head = git(pod.root, "rev-parse", "HEAD")
    execs, forwarded = round_trips(sshd, tmp_path)
    second = pod.ops("run", "submit", "-p", "hello", "--run-id", "r1",
                     env={"OPS_TEST_TOKEN": CANARY})
    assert second.exit_code == 0, second.stderr
    assert round_trips(sshd, tmp_path) == (execs, forwarded + 2)  # the sync's apply, submit
    tree = tmp_path / "pod-home" / "code" / head
    assert (tree / "new.txt").read_text() == "B\n"
    assert stat.S_IMODE((tree / "new.txt").stat().st_mode) & 0o222 == 0  # read-only, shared
    pod.wait_for((pod.runs / "r1" / "summary.json").exists, timeout=60)
    meta = json.loads((pod.runs / "r1" / "run_metadata.json").read_text())
    assert meta["git"]["commit"] == head
