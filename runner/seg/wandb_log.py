"""Optional Weights & Biases logging that never prompts and never takes a run down.

Modes: ``disabled`` (nothing), ``offline`` (files under ``<run_dir>/wandb``, synced later with
``wandb sync``), ``online``, and ``auto``: online when ``~/.netrc`` (or ``$NETRC``) holds
credentials for api.wandb.ai, offline otherwise. Online without credentials falls back to
offline with a warning: the workload's stdin is /dev/null and a login prompt would hang it.

``wandb`` is imported only here and only when a mode other than disabled is asked for; when it
is not installed, or ``wandb.init`` fails, the run goes on without it and says so in
events.jsonl (a ``warning`` event). The outcome is always one ``wandb`` event with ``mode``,
``project``, ``wandb_run_id`` and ``url``, which the wrapper copies into summary.json (the field
is not ``run_id``: in events.jsonl that name is the ops run id, checked by ``ops validate``).
"""

from __future__ import annotations

import contextlib
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.track import Tracker

WANDB_HOST = "api.wandb.ai"
MODES = ("auto", "online", "offline", "disabled")


def has_credentials(home: Path | None = None) -> bool:
    """An api.wandb.ai entry with a password in the netrc file (or WANDB_API_KEY set)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC") or (home or Path.home()) / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(WANDB_HOST)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_mode(mode: str, home: Path | None = None) -> tuple[str, str | None]:
    """(mode to use, a warning or None)."""
    if mode not in MODES:
        raise ValueError(f"unknown W&B mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "auto":
        return ("online" if has_credentials(home) else "offline"), None
    if mode == "online" and not has_credentials(home):
        return "offline", (f"wandb=online but no {WANDB_HOST} credentials in ~/.netrc: "
                           "logging offline (sync later with `wandb sync`)")
    return mode, None


class WandbRun:
    """A W&B run, or a no-op stand-in when W&B is disabled or unavailable."""

    def __init__(self, run: Any | None = None) -> None:
        self._run = run

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._run is not None:
            with contextlib.suppress(Exception):  # a logging hiccup must not stop training
                self._run.log(dict(metrics), step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            with contextlib.suppress(Exception):
                self._run.summary.update(dict(values))

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            with contextlib.suppress(Exception):
                self._run.finish(exit_code=exit_code)
            self._run = None


def start(mode: str, project: str, run_dir: Path, config: Mapping[str, Any], *,
          tracker: Tracker, name: str | None = None) -> WandbRun:
    """Start W&B as asked; always leaves one ``wandb`` event saying what happened."""
    resolved, warning = resolve_mode(mode)
    if warning:
        tracker.event("warning", topic="wandb", message=warning)
    if resolved == "disabled":
        tracker.event("wandb", mode="disabled", project=None, wandb_run_id=None, url=None)
        return WandbRun()
    try:
        import wandb
    except ImportError:
        return _unavailable(tracker, mode, "wandb is not installed (pip install "
                            "'pod-ops[wandb]'); continuing without W&B")
    directory = Path(run_dir) / "wandb"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.update(WANDB_SILENT="true", WANDB_MODE=resolved, WANDB_DIR=str(directory),
                      WANDB_CONSOLE="off")
    try:
        # ops decides the W&B run id up front (run_metadata.json records it at start)
        run = wandb.init(project=project, name=name, dir=str(directory),
                         mode="online" if resolved == "online" else "offline",
                         config=dict(config), id=os.environ.get("OPS_WANDB_RUN_ID") or None,
                         entity=os.environ.get("OPS_WANDB_ENTITY") or None)
    except Exception as exc:  # noqa: BLE001 - any W&B failure means "go on without it"
        return _unavailable(tracker, mode, f"wandb.init failed: {exc}; continuing without W&B")
    url = getattr(run, "url", None) if resolved == "online" else None
    tracker.event("wandb", mode=resolved, project=project, wandb_run_id=run.id, url=url,
                  dir=str(directory))
    return WandbRun(run)


def _unavailable(tracker: Tracker, requested: str, message: str) -> WandbRun:
    tracker.event("warning", topic="wandb", message=message)
    tracker.event("wandb", mode="disabled", requested_mode=requested, project=None,
                  wandb_run_id=None, url=None)
    return WandbRun()
