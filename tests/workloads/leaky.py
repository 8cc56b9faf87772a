"""Prints every secret it can find: the environment variable and the credentials file."""
import os
import sys
from pathlib import Path

token = os.environ.get("OPS_TEST_TOKEN", "<no token>")
print(f"token from env: {token}")
creds = Path(sys.argv[1]).read_text().strip()
print(f"creds file: {creds}")
print(f"split across writes: {token[:5]}", end="", flush=True)
print(f"{token[5:]} end", flush=True)
sys.stderr.write(f"stderr also: {token}\n")
