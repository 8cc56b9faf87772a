"""runner.digest: hashlib's SHA-256 without hashlib's import (issue 14)."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys

import pytest

from runner import digest

SAMPLES = [b"", b"abc", bytes(range(256)) * 257, "ünïcode".encode()]


@pytest.mark.parametrize("data", SAMPLES, ids=["empty", "abc", "64k", "utf8"])
def test_the_digest_is_hashlibs(data: bytes) -> None:
    ours = digest.sha256(data)
    assert (ours.hexdigest(), ours.digest()) == \
        (hashlib.sha256(data).hexdigest(), hashlib.sha256(data).digest())
    fed = digest.sha256()
    for start in range(0, len(data), 1000):
        fed.update(data[start:start + 1000])
    assert fed.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_python_without_the_builtin_module_gets_hashlibs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_builtin(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(digest.importlib, "import_module", no_builtin)
    digest._constructor.cache_clear()
    try:
        assert digest._constructor() is hashlib.sha256
        assert digest.sha256(b"abc").hexdigest() == hashlib.sha256(b"abc").hexdigest()
    finally:
        monkeypatch.undo()
        digest._constructor.cache_clear()


def test_a_digest_loads_no_openssl() -> None:
    """The point of the module: a fresh interpreter takes a digest without hashlib, whose
    import loads OpenSSL (3.5-5.5 ms measured here), where CPython has its own SHA-256."""
    builtin = [name for name in ("_sha2", "_sha256") if importlib.util.find_spec(name)]
    if not builtin:
        pytest.skip("this Python has no built-in SHA-256 module: hashlib is the right answer")
    probe = ("import json, sys\nfrom runner.digest import sha256\n"
             "print(sha256(b'abc').hexdigest())\n"
             "print(json.dumps(sorted({'hashlib', '_hashlib'} & set(sys.modules))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == hashlib.sha256(b"abc").hexdigest()
    assert json.loads(out[1]) == []
