"""Kept for callers of the old spelling: host resolution lives in ops.services.target."""

from __future__ import annotations

from ops.services.target import LOCAL_NAMES, RUNNERS_SEEN, host_name, open_target

__all__ = ["LOCAL_NAMES", "RUNNERS_SEEN", "host_name", "open_target"]
