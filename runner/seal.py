"""The seal that lets only a run's own wrapper end it (commit, then reveal).

`runner submit` draws a random key per run and keeps it in the run's secret store (mode 0600,
outside the run dir), writing only its SHA-256 into spec.json as ``seal.sha256``. The wrapper
reads the store and deletes it before the workload starts, so the workload never sees the key.
The summary.json that ends the run carries the key itself (``seal``): a reader accepts a summary
only when the key hashes to the spec's commitment. The key is revealed only after every process
of the workload has been ended, so nothing of the run is left to reuse it.

A spec without a commitment (runs written before seals existed) is read as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

KEY_BYTES = 32


def new_key() -> str:
    return os.urandom(KEY_BYTES).hex()  # secrets.token_hex, without importing secrets


def commitment(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def spec_commitment(spec: Mapping[str, Any]) -> str | None:
    seal = spec.get("seal")
    if isinstance(seal, Mapping) and isinstance(seal.get("sha256"), str):
        return str(seal["sha256"])
    return None


def problem(summary: Mapping[str, Any], spec: Mapping[str, Any] | None) -> str | None:
    """Why ``summary`` does not carry the seal ``spec`` commits to, or None when it does (or
    when the spec commits to none)."""
    expected = None if spec is None else spec_commitment(spec)
    if expected is None:
        return None
    key = summary.get("seal")
    if not isinstance(key, str) or len(key) > 4 * KEY_BYTES:
        return "summary.json carries no seal: it was not written by the run's wrapper"
    import hmac

    if not hmac.compare_digest(commitment(key), expected):
        return "summary.json carries a wrong seal: it was not written by the run's wrapper"
    return None
