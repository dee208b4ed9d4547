"""Run a subnetwork search that a test SIGKILLs part-way (see test_search.py)."""

import sys
import time
from pathlib import Path

import torch

from repsim.subnetwork import search
from tests.helpers import Tiny, make_data

KILL_KW = dict(
    method="surgeon",
    steps=60,
    batch_size=32,
    eval_every=10,
    lr=0.05,
    head_lr=0.05,
    gamma=1.0,
    progress=False,
    granularity="weight",
    checkpoint_every=5,
    reweight=1.0,
)


def model() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, beacon = Path(sys.argv[1]), Path(sys.argv[2])

    def slow(step, terms):
        beacon.write_text(str(step))
        time.sleep(0.05)  # give the parent time to kill us mid-run

    search(
        model(),
        make_data(120, 0, "train"),
        bias_labels="colour",
        val=make_data(60, 1, "val"),
        run_dir=run_dir,
        on_step=slow,
        **KILL_KW,
    )
