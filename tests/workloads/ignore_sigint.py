"""Ignores SIGINT and SIGTERM: only SIGKILL stops it."""
import signal
import time

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGINT and SIGTERM", flush=True)
while True:
    time.sleep(0.1)
