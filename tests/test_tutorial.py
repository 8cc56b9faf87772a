"""The tutorial's commands run as written, in a fresh git repository, as one shell script.

Every shell block of docs/tutorial*.md is extracted: in a block with `$ ` prompts the prompted
lines are the commands and the lines after them their documented output; in a block without
prompts every line is a command. A command not run is in SKIPPED with the reason, and a
SKIPPED entry the docs no longer hold fails too: nothing is skipped silently. Each command must
exit 0, and each documented output line that is free of numbers and paths (which differ per
machine and run) must appear in what the command printed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("tutorial*.md"))
FENCE = re.compile(r"^```([A-Za-z]*)\s*$")
SHELL_LANGS = ("", "sh", "shell", "bash", "console")

# command -> why the test does not run it
SKIPPED: dict[str, str] = {
    "make demo": "installs everything and trains for minutes: `make demo` is its own check",
    "python3 -m venv .venv": "the suite already runs inside an installed checkout",
    ".venv/bin/pip install -e .": "the suite already runs inside an installed checkout",
    "export PATH=$PWD/.venv/bin:$PATH": "the test puts this checkout's venv on PATH itself",
    "ops run status third": "needs a run whose wrapper was killed outright (kill -9); "
                            "tests/test_kill_safety.py makes one",
    "ops run tail third --follow -n 1; echo $?": "the same dead run as above",
}


@dataclass
class Command:
    doc: str
    line: int
    text: str
    expected: list[str] = field(default_factory=list)


def extract(path: Path) -> list[Command]:
    """The commands of every shell block of one Markdown file, in order."""
    commands: list[Command] = []
    block: list[tuple[int, str]] = []
    language: str | None = None  # None: outside a block
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = FENCE.match(line)
        if fence and language is None:
            language, block = fence.group(1), []
        elif fence:
            if language in SHELL_LANGS:
                commands += _block_commands(path.name, block)
            language = None
        elif language is not None:
            block.append((number, line))
    return commands


def _block_commands(doc: str, block: list[tuple[int, str]]) -> list[Command]:
    prompted = any(text.startswith("$ ") for _, text in block)
    found: list[Command] = []
    for number, text in block:
        if prompted and text.startswith("$ "):
            found.append(Command(doc, number, _strip_comment(text[2:])))
        elif prompted and found:
            found[-1].expected.append(text)
        elif not prompted and text.strip() and not text.lstrip().startswith("#"):
            found.append(Command(doc, number, _strip_comment(text)))
    return found


def _strip_comment(text: str) -> str:
    """A trailing `# comment` after two or more spaces is prose, not part of the command."""
    return re.split(r"\s{2,}#", text, maxsplit=1)[0].strip()


def _checkable(line: str) -> bool:
    """A documented output line the same on every machine: no digits, no paths, no '...'."""
    return bool(line.strip()) and not re.search(r"[0-9/]|\.\.\.", line)


def _script(commands: list[Command]) -> str:
    lines = []
    for index, command in enumerate(commands):  # $? is carried over the markers
        lines += [f"echo '::cmd {index}'", "(exit ${rc:-0})", command.text,
                  f"rc=$?; echo \"::rc {index} $rc\""]
    return "\n".join(lines) + "\n"


def _outputs(stdout: str) -> tuple[dict[int, str], dict[int, int]]:
    texts: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current = -1
    for line in stdout.splitlines():
        if line.startswith("::cmd "):
            current = int(line.split()[1])
            texts[current] = []
        elif line.startswith("::rc "):
            _, index, code = line.split()
            codes[int(index)] = int(code)
        elif current >= 0:
            texts[current].append(line)
    return {k: "\n".join(v) for k, v in texts.items()}, codes


def test_the_tutorial_has_commands_and_declares_every_skip() -> None:
    commands = [c for doc in DOCS for c in extract(doc)]
    assert len(commands) >= 10
    texts = {c.text for c in commands}
    stale = sorted(set(SKIPPED) - texts)
    assert not stale, f"SKIPPED names commands the tutorial no longer has: {stale}"


@pytest.mark.tmux
@pytest.mark.timeout(300)  # ~20 ops commands and 5 runs: about 30 s idle, 2 min at load 13
def test_tutorial_commands_run_as_written(tmp_path: Path) -> None:
    if shutil.which("tmux") is None or shutil.which("git") is None:
        pytest.skip("tmux and git are needed (CI installs them)")
    repo = tmp_path / "tut"  # the tutorial's project is named after its directory: tut
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    socket = f"ops-test-{secrets.token_hex(4)}"
    overlay = repo / "configs" / "ops" / "project.local.json"
    overlay.parent.mkdir(parents=True)
    overlay.write_text(json.dumps({"tmux": {"socket": socket}}))  # never the user's server
    commands = [c for doc in DOCS for c in extract(doc) if c.text not in SKIPPED]
    script = _script(commands).replace("tmux -L ops ", f"tmux -L {socket} ")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("OPS_PROJECT_CONFIG", None)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=280, check=False)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    texts, codes = _outputs(proc.stdout)
    problems = []
    for index, command in enumerate(commands):
        where = f"{command.doc}:{command.line} `{command.text}`"
        if codes.get(index) != 0:
            problems.append(f"{where} exited {codes.get(index)}")
        if command.text == "echo $?":  # the documented exit code of the command before
            if texts.get(index, "").strip() != "\n".join(command.expected).strip():
                problems.append(f"{where} printed {texts.get(index)!r}")
            continue
        expected = [line.replace("tmux -L ops ", f"tmux -L {socket} ").strip()
                    for line in command.expected if _checkable(line)]
        problems += [f"{where} did not print {line!r}" for line in expected
                     if line not in texts.get(index, "")]
    assert not problems, "\n".join(problems) + "\n--- stderr ---\n" + proc.stderr[-3000:]
