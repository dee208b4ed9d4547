"""Time building the acceptance family on digits-imbalanced and summarise its members.

5 dense small CNNs (seeds 0-4; 10 epochs, batch 64, Adam lr 3e-3) and, per seed, global
magnitude pruning at 50/80/90/95% with 5 fine-tuning epochs, with and without KD
(T=4, alpha=0.9, gamma=0.1): 5 + 40 = 45 models.

Usage: python benchmarks/family_digits.py [--threads 1] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch

from repsim.data import load_dataset
from repsim.pipeline.family import build
from repsim.train import evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = args.cache or tempfile.mkdtemp(prefix="repsim-family-")
    config = {
        "name": "digits-imbalanced-cnn",
        "dataset": "digits-imbalanced",
        "model": "cnn",
        "seeds": [0, 1, 2, 3, 4],
        "cache_dir": cache,
        "train": {"epochs": 10, "batch_size": 64, "lr": 3e-3, "optimizer": "adam"},
        "compression": [
            {
                "method": "magnitude",
                "sparsities": [0.5, 0.8, 0.9, 0.95],
                "kd": [False, True],
                "finetune_epochs": 5,
            }
        ],
    }
    t0 = time.perf_counter()
    fam = build(config)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = build(config)
    second = time.perf_counter() - t0
    test = load_dataset("digits-imbalanced").test
    rows = defaultdict(lambda: defaultdict(list))
    for m in fam:
        ev = evaluate(m.load(), test)
        minority = ev.groups == 1
        key = f"{m.method} s={m.setting.sparsity} kd={m.setting.kd}"
        rows[key]["acc"].append(ev.accuracy)
        rows[key]["minority"].append(
            float(np.mean(ev.predictions[minority] == ev.labels[minority]))
        )
        rows[key]["majority"].append(
            float(np.mean(ev.predictions[~minority] == ev.labels[~minority]))
        )
    summary = {k: {n: round(statistics.mean(v), 4) for n, v in d.items()} for k, d in rows.items()}
    out = {
        "threads": args.threads,
        "members": len(fam),
        "built": fam.n_built,
        "first_build_s": round(first, 1),
        "second_build_s": round(second, 2),
        "second_built": again.n_built,
        "summary": summary,
        "cache": cache,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
