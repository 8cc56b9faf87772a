"""Prints every secret it can find, then lingers so that tests can inspect running processes:
ARGV: CREDS_FILE SECONDS, or CREDS_FILE RELEASE_PATH to linger until that file exists."""
import os
import sys
import time
from pathlib import Path

token = os.environ.get("OPS_TEST_TOKEN", "<no token>")
print(f"token from env: {token}")
print(f"unforwarded: {os.environ.get('OPS_OTHER_SECRET', '<not forwarded>')}")
creds = Path(sys.argv[1]).read_text().strip()
print(f"creds file: {creds}")
print(f"split across writes: {token[:5]}", end="", flush=True)
time.sleep(0.2)
print(f"{token[5:]} end", flush=True)
sys.stderr.write(f"stderr also: {token}\n")
sys.stderr.flush()
print("lingering", flush=True)
try:
    time.sleep(float(sys.argv[2]))
except ValueError:  # a path: linger until the test creates it (a minute at most)
    release, deadline = Path(sys.argv[2]), time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
