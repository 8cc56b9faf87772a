"""Which environment variables cross from a submitter (or a host) into a run.

An allow-list, not a deny-list: a workload sees the variables named here, the preset's own
``env``, and the secrets its preset forwards, nothing else. ops uses the same list for the
local processes it starts (git, the runner), so a credential in the user's shell never reaches a
child by accident.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# variables a workload inherits from the host; everything else is dropped
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
)
# never inherited even through a preset's env: they make a single process think it is a rank
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                   "MASTER_PORT", "GROUP_RANK", "ROLE_RANK")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def scrubbed_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of an environment: no credentials, no stray ranks."""
    source = os.environ if source is None else source
    env = {k: v for k, v in source.items() if k in INHERITED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


@contextmanager
def scrubbed_environ() -> Iterator[None]:
    """os.environ as a process started with scrubbed_env() would see it, for the duration
    (the in-process runner answers read os.environ itself)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(scrubbed_env(saved))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
