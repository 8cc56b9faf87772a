"""A module imported on first attribute access, so that `ops` commands that never use
paramiko (every command on a host with a live shared master) do not pay for its import."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> object:
        if self._module is None:
            import logging

            self._module = importlib.import_module(self._name)
            # paramiko logs transport failures at ERROR; without a handler Python prints them
            logging.getLogger(self._name).addHandler(logging.NullHandler())
        return getattr(self._module, attr)
