"""Benchmark: capture of a CIFAR-style ResNet-20 on Fashion-MNIST into the Zarr store.

Captures every residual block (``layer{1,2,3}.{0,1,2}``) with ``mean`` reduction plus the last
stage's blocks flattened (64x7x7 = 3136 features each) in one pass
(:func:`repsim.capture.record_reductions`), and times it against a bare forward pass over the
same data in the same process. Each ``n`` runs in a fresh subprocess; peak memory is the peak
resident set size (sampled every 2 ms from ``/proc/self/statm``) above the RSS just before the
phase, so the dataset itself (which grows with ``n``) is not counted.

Run: ``python benchmarks/bench_capture.py [--n 10000 40000] [--batch-size 256]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA_ROOT = "/work/shared/data/fashion-mnist"
MEAN_LAYERS = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
FLAT_LAYERS = [f"layer3.{b}" for b in range(3)]


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Sample RSS in a thread; ``peak - start`` is the phase's extra memory."""

    def __enter__(self) -> PeakRSS:
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def one(n: int, batch_size: int, repeats: int) -> dict:
    import torch

    from repsim.capture import record_reductions
    from repsim.capture.store import ActivationStore
    from repsim.data import load_dataset
    from repsim.models import ResNetCIFAR

    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", root=DATA_ROOT).train.subset(slice(0, n))
    model = ResNetCIFAR((1, 28, 28), 10, depth=20, width=16).eval()
    x = torch.from_numpy(data.x)

    def bare() -> None:
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                model(x[s : s + batch_size])

    bare()  # warm-up (allocator, kernels)
    out: dict = {"n": n, "batch_size": batch_size, "torch_threads": torch.get_num_threads()}
    bare_t, cap_t = [], []
    for _ in range(repeats):
        with PeakRSS() as mem_bare:
            t0 = time.perf_counter()
            bare()
            bare_t.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            store = ActivationStore(tmp)
            with PeakRSS() as mem_cap:
                t0 = time.perf_counter()
                caps = record_reductions(
                    model,
                    data,
                    {"mean": MEAN_LAYERS, "flatten": FLAT_LAYERS},
                    store=store,
                    batch_size=batch_size,
                    device="cpu",
                    progress=False,
                )
                cap_t.append(time.perf_counter() - t0)
            written = sum(e.nbytes for e in store.entries())
            raw = sum(int(a.nbytes) for c in caps.values() for a in c.values())
    out.update(
        bare_s=min(bare_t),
        capture_s=min(cap_t),
        ratio=min(cap_t) / min(bare_t),
        bytes_written=written,
        bytes_uncompressed=raw,
        peak_extra_mb_bare=mem_bare.extra_mb,
        peak_extra_mb_capture=mem_cap.extra_mb,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 40_000])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.n[0], args.batch_size, args.repeats)))
        return
    print(
        f"{'n':>7} {'bare s':>8} {'capture s':>10} {'ratio':>6} {'written MB':>11} "
        f"{'raw MB':>8} {'peak+ bare MB':>14} {'peak+ capture MB':>17}"
    )
    for n in args.n:
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                "--n",
                str(n),
                "--batch-size",
                str(args.batch_size),
                "--repeats",
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"{r['n']:>7} {r['bare_s']:>8.2f} {r['capture_s']:>10.2f} {r['ratio']:>6.2f} "
            f"{r['bytes_written'] / 2**20:>11.1f} {r['bytes_uncompressed'] / 2**20:>8.1f} "
            f"{r['peak_extra_mb_bare']:>14.1f} {r['peak_extra_mb_capture']:>17.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
