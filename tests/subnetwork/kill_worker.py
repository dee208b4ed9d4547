"""Run a subnetwork search that a test SIGKILLs part-way (see test_search.py).

``python -m tests.subnetwork.kill_worker RUN_DIR BEACON [METHOD]`` with METHOD ``surgeon``
(default) or ``bise``.
"""

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
# 4 gate updates per epoch, tau halved every 2 epochs from 1 to <= 0.01: 14 epochs, 56 steps
KILL_KW_BISE = dict(
    method="bise",
    batch_size=32,
    head_epochs=3,
    tau_period=2,
    tau_min=0.01,
    progress=False,
    checkpoint_every=1,
)
SETTINGS = {"surgeon": KILL_KW, "bise": KILL_KW_BISE}


def model() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, beacon = Path(sys.argv[1]), Path(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) > 3 else "surgeon"

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
        **SETTINGS[method],
    )
