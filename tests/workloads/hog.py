"""Allocates memory steadily until stopped."""
import time

blocks = []
for _ in range(400):
    blocks.append(bytearray(8 * 2**20))
    for i in range(0, len(blocks[-1]), 4096):
        blocks[-1][i] = 1
    time.sleep(0.02)
print("never stopped", flush=True)
