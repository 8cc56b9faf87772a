"""SHA-256 without importing hashlib.

`import hashlib` loads OpenSSL's libcrypto: 3.5-5.5 ms of every `ops` command's start-up
measured here (issue 14), for the few short digests a command takes (the config cache's key,
the SSH socket names). CPython ships its own SHA-256 as a small module, `_sha2` (3.12 and
later) or `_sha256` (up to 3.11); it is what hashlib itself falls back to, and it gives the
same digests. hashlib is used where neither is present (a Python built without them).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Protocol


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def sha256(data: bytes = b"") -> Digest:
    """A SHA-256 object, as ``hashlib.sha256(data)`` gives."""
    return _constructor()(data)


@functools.cache
def _constructor() -> Callable[[bytes], Digest]:
    for name in ("_sha2", "_sha256"):
        try:
            make: Callable[[bytes], Digest] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return make
    import hashlib

    return hashlib.sha256
