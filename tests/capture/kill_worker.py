"""Subprocess entry point for the kill/concurrency tests: capture digits into a store."""

from __future__ import annotations

import sys

from repsim.capture import record
from repsim.capture.store import ActivationStore
from repsim.data import load_dataset
from tests.helpers import tiny_resnet

LAYERS = ["stem", "block1", "block2.conv2"]
CHUNK_BYTES = 4096

if __name__ == "__main__":
    path, batch = sys.argv[1], int(sys.argv[2])
    data = load_dataset("digits").test
    store = ActivationStore(path, chunk_bytes=CHUNK_BYTES)
    record(
        tiny_resnet(slow=True), data, layers=LAYERS, store=store, batch_size=batch, progress=False
    )
    print("done", flush=True)
