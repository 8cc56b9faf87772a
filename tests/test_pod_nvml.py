"""`ops pod up` gives the pod's runner nvidia-ml-py (issue 15 item 11), else says it could not.

The pod is this machine over the loopback sshd, and its python is this venv's interpreter with
every package but pynvml, whose pip installs only from a local folder into the pod's own
site-packages: an nvidia-ml-py wheel there (a stand-in whose NVML finds no driver, as on a
machine without a GPU) or none (a pod that cannot reach a package index).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import Project
from .fake_providers.cloud import FakeCloud
from .sshd_fixture import Sshd

pytestmark = [pytest.mark.ssh, pytest.mark.tmux]

PYNVML = b'''class NVMLError(Exception):
    pass


def nvmlInit():
    raise NVMLError("Driver Not Loaded")
'''


def _wheel(directory: Path, name: str, version: str, modules: dict[str, bytes]) -> Path:
    dist = f"{name.replace('-', '_')}-{version}"
    files = {**modules,
             f"{dist}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={_b64(hashlib.sha256(data).digest())},{len(data)}"
              for path, data in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,", ""]
                                                  ).encode()
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _site_without_pynvml(tmp: Path) -> Path:
    """This venv's site-packages, linked entry by entry, less nvidia-ml-py."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    filtered = tmp / "pod-system-site"
    filtered.mkdir()
    for entry in site.iterdir():
        if entry.name == "pynvml.py" or entry.name.startswith("nvidia_ml_py"):
            continue
        (filtered / entry.name).symlink_to(entry)
    return filtered


def _pod_venv_python(pod_home: Path, tmp: Path, wheels: Path) -> Path:
    """The pod's venv python: no pynvml, a pip that installs from `wheels` only, into the
    pod's own site dir (never into this venv)."""
    own_site, filtered = tmp / "pod-venv-site", _site_without_pynvml(tmp)
    own_site.mkdir()
    python = pod_home / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        f'export PIP_CONFIG_FILE={os.devnull} PIP_NO_INDEX=1 PIP_FIND_LINKS="{wheels}" '
        f'PIP_TARGET="{own_site}"\n'
        f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{own_site}:{filtered}" '
        f'exec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    return python


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _pod_up(project: Project, sshd: Sshd, tmp: Path, *, with_wheel: bool) -> tuple[bool, str]:
    """`ops pod up`: whether the pod's runner python imports pynvml after it, and what it said."""
    wheels = tmp / "wheels"
    wheels.mkdir()
    if with_wheel:
        _wheel(wheels, "nvidia-ml-py", "12.535.161", {"pynvml.py": PYNVML})
    pod_home = tmp / "pod-home"
    python = _pod_venv_python(pod_home, tmp, wheels)
    _git(project.root, "init", "-q", "-b", "main")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-q", "-m", "x")
    cloud = FakeCloud.make(tmp, sshd.port, boot_polls=1, port_after=0)
    up = project.ops("pod", "up", "gpu1", "--provider", "vast", "--identity",
                     str(sshd.client_key), "--user", sshd.user, "--ops-home", str(pod_home),
                     "--outputs-dir", str(tmp / "pod-runs"), "--python", str(python),
                     "--netrc-path", str(tmp / "pod-netrc"), "--timeout", "60",
                     env=cloud.env, timeout=120)
    assert up.exit_code == 0, up.stderr
    state = json.loads((project.root / ".ops" / "pods.json").read_text())
    assert state["pods"]["gpu1"]["state"] == "ready"
    imports = subprocess.run([str(python), "-c", "import pynvml; print(pynvml.__file__)"],
                             capture_output=True, text=True, check=False)
    assert imports.returncode != 0 or imports.stdout.startswith(str(tmp / "pod-venv-site"))
    return imports.returncode == 0, up.stderr


def test_pod_up_installs_nvidia_ml_py_for_the_runner(project: Project, sshd: Sshd,
                                                      tmp_path: Path) -> None:
    imports, said = _pod_up(project, sshd, tmp_path, with_wheel=True)
    assert imports  # the runner's python has NVML's bindings now
    assert "installed nvidia-ml-py>=12.535" in said
    assert "cannot be enforced" not in said


def test_a_pod_that_cannot_install_it_is_ready_and_says_the_limit_is_not_enforced(
        project: Project, sshd: Sshd, tmp_path: Path) -> None:
    imports, said = _pod_up(project, sshd, tmp_path, with_wheel=False)
    assert not imports
    assert "no nvidia-ml-py (cannot install nvidia-ml-py>=12.535" in said
    assert "gpu_mem_limit_mb cannot be enforced on this pod" in said
