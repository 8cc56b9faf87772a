"""Making sure a host runs this very runner: one probe, and an upload or a venv only if needed.

A runner build is the runner package (runner/**/*.py) plus the contract schemas
(runner/schemas/*.json), identified by `<runner.__version__>-<sha256 of those files, 12 hex>`:
an edit during development is a new build. On the host a build lives, immutable, in
`<ops_home>/runner/<build>/runner/...`; it is extracted into a temp dir and renamed into place,
so a build dir that exists is complete. Commands then run

    env PYTHONPATH=<ops_home>/runner/<build> <python> -m runner VERB ...

(`env` so that any login shell runs it; no secrets ever appear there). `<python>` is
`<ops_home>/venv/bin/python` when ops had to make that venv (created with
--system-site-packages, so the pod's torch is reused) because psutil was missing,
else the host's python as configured.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import runner
from ops.errors import HostError
from ops.hosts.base import Host, HostCommandError
from runner.digest import sha256
from runner.schemas import schema_dir

# module -> pip requirement, as pinned in pyproject.toml
REQUIREMENTS: dict[str, str] = {"psutil": "psutil>=5.9,<8"}
MIN_PYTHON = (3, 10)
PIP_TIMEOUT_S = 900.0

# Runs on the host under the configured python: which python to use, which modules it lacks,
# and the runner's own `version` answer from the build dir (the handshake). Python 3.6 syntax,
# so that an old python still answers with its version instead of a SyntaxError.
_PROBE = r"""
import json, os, subprocess, sys
home = os.path.expanduser(sys.argv[1])
build, mods = sys.argv[2], sys.argv[3:]
venv_py = os.path.join(home, "venv", "bin", "python")
py = venv_py if os.access(venv_py, os.X_OK) else sys.executable
rdir = os.path.join(home, "runner", build)
def run(argv, env=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                       universal_newlines=True)
    return p.returncode, p.stdout.strip(), p.stderr.strip()[-2000:]
check = ("import importlib.util as u, sys; "
         "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))")
code, out, err = run([py, "-c", check] + mods)
doc = {"home": home, "python": py, "system_python": sys.executable, "venv": py == venv_py,
       "python_version": list(sys.version_info[:3]), "runner_dir": rdir,
       "missing": out.split() if code == 0 else mods, "runner": None, "error": err}
if os.path.isdir(rdir):
    code, out, err = run([py, "-m", "runner", "version"], dict(os.environ, PYTHONPATH=rdir))
    try:
        doc["runner"] = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        doc["error"] = err or out
print(json.dumps(doc))
"""

# Runs on the host: extract an uploaded build into a temp dir and rename it into place.
_EXTRACT = r"""
import os, shutil, sys, tarfile, tempfile
tar_path, dest = sys.argv[1], sys.argv[2]
parent = os.path.dirname(dest)
tmp = tempfile.mkdtemp(prefix=".extract-", dir=parent)
with tarfile.open(tar_path) as tf:
    kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    tf.extractall(tmp, **kw)
if os.path.isdir(dest):
    old = tempfile.mkdtemp(prefix=".old-", dir=parent)
    os.rename(dest, os.path.join(old, "build"))
    shutil.rmtree(old, ignore_errors=True)
os.rename(tmp, dest)
os.chmod(dest, 0o755)
os.remove(tar_path)
"""


class RunnerHost(Host, Protocol):
    """What bootstrapping needs of a host: exec, an SFTP write, a settable runner command."""

    runner_command: tuple[str, ...]

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None: ...


class RunnerBuild(NamedTuple):
    version: str
    digest: str
    files: tuple[tuple[str, bytes], ...]

    @property
    def build_id(self) -> str:
        return f"{self.version}-{self.digest[:12]}"

    def tarball(self) -> bytes:
        import tarfile  # only an upload needs it

        buf = io.BytesIO()
        now = time.time()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in self.files:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, now
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def local_build() -> RunnerBuild:
    """The runner this ops would run: its source files and schemas, and their digest."""
    package = Path(runner.__file__).resolve().parent
    files = [(f"runner/{p.relative_to(package).as_posix()}", p.read_bytes())
             for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    files += [(f"runner/schemas/{p.name}", p.read_bytes()) for p in schema_dir().glob("*.json")]
    files.sort()
    digest = sha256()
    for name, data in files:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return RunnerBuild(runner.__version__, digest.hexdigest(), tuple(files))


class RunnerInfo(NamedTuple):
    """What `ensure_runner` found or did on the host."""

    build_id: str
    version: str
    ops_home: str
    runner_dir: str
    python: str
    venv: bool
    actions: tuple[str, ...]

    @property
    def argv(self) -> tuple[str, ...]:
        return ("env", f"PYTHONPATH={self.runner_dir}", f"OPS_RUNNER_DIR={self.runner_dir}",
                self.python, "-m", "runner")

    def to_json(self) -> dict[str, Any]:
        return {"build": self.build_id, "runner_version": self.version,
                "ops_home": self.ops_home, "runner_dir": self.runner_dir,
                "python": self.python, "venv": self.venv, "actions": list(self.actions)}


class _Probe(NamedTuple):
    doc: dict[str, Any]

    def runner_ok(self, build: RunnerBuild) -> bool:
        answer = self.doc.get("runner")
        return isinstance(answer, dict) and answer.get("runner_version") == build.version

    @property
    def missing(self) -> list[str]:
        return list(self.doc.get("missing") or [])


def ensure_runner(host: RunnerHost, ops_home: str, python: str = "python3", *,
                  requirements: Mapping[str, str] | None = None, pip_args: Sequence[str] = (),
                  build: RunnerBuild | None = None) -> RunnerInfo:
    """Make the host's runner this build (upload it, make a venv if modules are missing),
    point `host.runner_command` at it, and say what was done. A warm host costs one exec."""
    build = build or local_build()
    requirements = REQUIREMENTS if requirements is None else requirements
    probe = _probe(host, python, ops_home, build, requirements)
    actions: list[str] = []
    if probe.missing:  # first: the handshake itself needs them
        actions += _install(host, probe, requirements, pip_args)
        probe = _probe(host, python, ops_home, build, requirements)
    if not probe.runner_ok(build):
        _upload(host, python, probe, build)
        actions.append(f"uploaded runner {build.build_id}")
        probe = _probe(host, python, ops_home, build, requirements)
    _require_ready(host, probe, build)
    doc = probe.doc
    info = RunnerInfo(build.build_id, build.version, doc["home"], doc["runner_dir"],
                      doc["python"], bool(doc["venv"]), tuple(actions))
    host.runner_command = info.argv
    return info


def _probe(host: Host, python: str, ops_home: str, build: RunnerBuild,
           requirements: Mapping[str, str]) -> _Probe:
    result = host.exec([python, "-c", _PROBE, ops_home, build.build_id, *requirements],
                       check=False, timeout=120)
    try:
        doc = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise HostError(f"cannot run {python} on {host.name}",
                        details=(result.stderr or result.stdout).strip().splitlines()[-5:],
                        hint="install python3 on the host or set the host's python "
                             "to an interpreter that exists there") from None
    version = tuple(doc.get("python_version") or ())
    if version < MIN_PYTHON:
        raise HostError(f"{python} on {host.name} is Python {'.'.join(map(str, version))}; "
                        f"the runner needs {'.'.join(map(str, MIN_PYTHON))} or newer",
                        hint="set the host's python to a newer interpreter")
    return _Probe(doc)


def _upload(host: RunnerHost, python: str, probe: _Probe, build: RunnerBuild) -> None:
    """The build as one tar.gz over SFTP, extracted and renamed into place by the host."""
    runner_dir = str(probe.doc["runner_dir"])
    tar_path = f"{runner_dir.rsplit('/', 1)[0]}/.upload-{build.build_id}.tar.gz"
    host.write_file(tar_path, build.tarball(), 0o600)
    host.exec([python, "-c", _EXTRACT, tar_path, runner_dir], timeout=120)


def _install(host: Host, probe: _Probe, requirements: Mapping[str, str],
             pip_args: Sequence[str]) -> list[str]:
    """A venv that sees the system site-packages (created once), then pip install."""
    doc, actions = probe.doc, []
    venv_dir = f"{doc['home']}/venv"
    if not doc["venv"]:
        _make_venv(host, str(doc["system_python"]), venv_dir)
        actions.append(f"created venv {venv_dir} (--system-site-packages)")
    specs = [requirements[m] for m in probe.missing]
    pip = [f"{venv_dir}/bin/python", "-m", "pip", "install", "--disable-pip-version-check",
           "--quiet", *pip_args, *specs]
    try:
        host.exec(pip, timeout=PIP_TIMEOUT_S)
    except HostCommandError as exc:
        raise HostError(f"cannot install {', '.join(specs)} on {host.name}",
                        details=exc.details,
                        hint="the host needs a package index (or pre-install them)") from exc
    actions.append(f"installed {', '.join(specs)}")
    return actions


def _make_venv(host: Host, system_python: str, venv_dir: str) -> None:
    """Without its own pip when the system's pip shows through (seconds faster on a pod
    image that has one: it installs into the venv all the same), else with ensurepip's."""
    venv_python = f"{venv_dir}/bin/python"
    try:
        host.exec([system_python, "-m", "venv", "--system-site-packages", "--without-pip",
                   venv_dir], timeout=300)
        if not host.exec([venv_python, "-c", "import pip"], check=False).ok:
            host.exec([venv_python, "-m", "ensurepip", "--default-pip"], timeout=300)
    except HostCommandError as exc:
        raise HostError(f"cannot create a venv with pip at {venv_dir} on {host.name}",
                        details=exc.details, hint="install the venv module on the host "
                        "(Debian/Ubuntu: apt-get install python3-venv)") from exc


def _require_ready(host: Host, probe: _Probe, build: RunnerBuild) -> None:
    doc = probe.doc
    if not probe.runner_ok(build):
        raise HostError(f"the runner on {host.name} does not answer the version handshake",
                        details=[f"build {build.build_id} in {doc['runner_dir']}",
                                 *str(doc.get("error") or "").splitlines()[-5:]],
                        hint="a runner.py or runner/ package in the host's home directory "
                             "would shadow it")
    if probe.missing:
        raise HostError(f"{doc['python']} on {host.name} still lacks "
                        f"{', '.join(probe.missing)} after installing them")
