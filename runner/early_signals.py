"""Stop signals that reach the wrapper before it can act on them.

`python -m runner exec` takes these over before anything else is imported: a TERM that SLURM
or a quick `ops run cancel` sends while the interpreter is still loading the wrapper (the secret
store already taken) would otherwise kill it with no summary. The wrapper replays the first
one as soon as its own handlers are up, and the run ends `killed` in good order.
"""

from __future__ import annotations

import signal
from typing import Any

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_received: list[int] = []


def hold() -> None:
    for sig in HELD:
        signal.signal(sig, _remember)


def _remember(signum: int, _frame: Any) -> None:
    _received.append(signum)


def received() -> list[int]:
    """The signals that arrived while held, first first."""
    return list(_received)
