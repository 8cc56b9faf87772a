"""pod-ops: the laptop-side `ops` command."""

from runner import __version__

__all__ = ["__version__"]
