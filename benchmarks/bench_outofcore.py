"""Benchmark: out-of-core linear CKA on activation matrices larger than a memory cap.

Writes synthetic activations to Zarr chunk by chunk (``X``: ``[n_max, d]`` float32, low-rank
signal plus noise, post-ReLU; ``Y``: ``[n_max, d_y]``, a noisy projection of ``X``), compressed
like the activation store (Blosc/zstd level 1, about 2 MiB chunks of whole rows). Then, for each
``n``, a *fresh subprocess* streams linear CKA (biased and debiased from one pass) over the first
``n`` rows with :func:`repsim.similarity.outofcore.stream_cka` and reports

* wall time and CPU time (user + system, all threads), each per 1000 rows (linear scaling
  means a constant; CPU time is the steadier figure on a shared machine),
* peak resident memory of the whole process (``VmHWM`` from ``/proc/self/status``: Python,
  numpy, torch, Zarr and the accumulators), checked against ``--cap-gb``,
* a read-only pass over the same rows (the I/O + decompression floor) and the ratio to it,
* with ``--dask``, the same CKA as a Dask reduction on the threaded scheduler.

Run (from the repository root)::

    python benchmarks/bench_outofcore.py --n 20000 200000 --d 4096 --cap-gb 1     # 3.3 GB of X
    python benchmarks/bench_outofcore.py --quick                                   # smoke test

The Zarr data go to ``--workdir`` (default a temporary directory, deleted at the end unless
``--keep``); results are printed and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _zarr_array(path: Path, n: int, d: int):
    import zarr
    import zarr.codecs

    rows = max(1, (2 << 20) // (4 * d))
    return zarr.create_array(
        str(path),
        shape=(n, d),
        chunks=(rows, d),
        dtype="float32",
        fill_value=float("nan"),
        compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
        overwrite=True,
    )


def generate(workdir: Path, n: int, d: int, dy: int, seed: int, rank: int = 64) -> dict:
    """Write X [n, d] and Y [n, dy] to Zarr in blocks; memory is one block."""
    import numpy as np
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    X = _zarr_array(workdir / "X.zarr", n, d)
    Y = _zarr_array(workdir / "Y.zarr", n, dy)
    W = rng.standard_normal((rank, d), dtype=np.float32) / np.sqrt(rank)
    cols = rng.permutation(d)[:dy]
    block = X.chunks[0] * max(1, 8192 // X.chunks[0])
    t0 = time.perf_counter()
    for i in tqdm(range(0, n, block), desc="write X, Y", disable=None, leave=False):
        m = min(block, n - i)
        z = rng.standard_normal((m, rank), dtype=np.float32)
        x = z @ W
        x += 0.5 * rng.standard_normal((m, d), dtype=np.float32)
        np.maximum(x, 0, out=x)
        X[i : i + m] = x
        y = 0.8 * x[:, cols] + 0.6 * rng.standard_normal((m, dy), dtype=np.float32)
        Y[i : i + m] = y
    return {"write_s": time.perf_counter() - t0, "x_bytes": n * d * 4, "y_bytes": n * dy * 4}


class Prefix:
    """The first n rows of a Zarr array, read lazily by row slices (picklable)."""

    def __init__(self, a, n: int) -> None:
        self.a, self.shape = a, (n, *a.shape[1:])
        self.chunks = a.chunks

    def __getitem__(self, s: slice):
        return self.a[s.start : min(s.stop, self.shape[0])]


def _vm_hwm_mb() -> float:
    """Peak resident set size of this process image (``VmHWM``), in MiB.

    Unlike ``ru_maxrss``, which Linux carries over from the parent across fork + exec (so a
    child would report the parent's peak), ``VmHWM`` belongs to this process image only.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(workdir: Path, n: int, batch_size: int, use_dask: bool) -> dict:
    """Run in a fresh process: stream CKA over the first n rows, report time and peak RSS."""
    import numpy as np
    import zarr

    from repsim._core.rows import iter_rows
    from repsim.similarity import LinearCKAAccumulator

    rss_imports = _vm_hwm_mb()
    X = zarr.open_array(str(workdir / "X.zarr"), mode="r")
    Y = zarr.open_array(str(workdir / "Y.zarr"), mode="r")

    Xn, Yn = Prefix(X, n), Prefix(Y, n)
    t0 = time.perf_counter()
    total = 0.0
    for xb, yb in iter_rows([Xn, Yn], batch_size, progress=False):
        total += float(np.asarray(xb[:1, :1]).sum()) + float(np.asarray(yb[:1, :1]).sum())
    read_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    acc = LinearCKAAccumulator()
    for xb, yb in iter_rows([Xn, Yn], batch_size, progress=False):
        acc.update(xb, yb)
    value, value_debiased = acc.result(), acc.result(debiased=True)
    cka_s = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = {
        "n": n,
        "d": int(X.shape[1]),
        "d_y": int(Y.shape[1]),
        "batch_size": batch_size,
        "x_gb": n * X.shape[1] * 4 / 1e9,
        "read_s": read_s,
        "cka_s": cka_s,
        "cka_over_read": cka_s / read_s,
        "s_per_1000_rows": 1000 * cka_s / n,
        "cka_cpu_s": cpu_s,
        "cpu_s_per_1000_rows": 1000 * cpu_s / n,
        "cka": value,
        "cka_debiased": value_debiased,
        "rss_after_imports_mb": rss_imports,
    }
    if use_dask:
        from repsim.scale.dask import distributed_cka

        t0 = time.perf_counter()
        v = distributed_cka(Xn, Yn, chunk_rows=batch_size)
        out["dask_threads_s"] = time.perf_counter() - t0
        out["dask_abs_diff"] = abs(v - value)
    out["peak_rss_mb"] = _vm_hwm_mb()
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def gpu_figures(n: int, d: int, batch_size: int) -> dict | None:
    """Streaming CKA on CUDA tensors (float64 accumulation on the device), when a GPU exists."""
    import torch

    if not torch.cuda.is_available():
        return None
    from repsim.similarity import LinearCKAAccumulator

    g = torch.Generator(device="cuda").manual_seed(0)
    acc = LinearCKAAccumulator()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(0, n, batch_size):
        x = torch.randn(batch_size, d, device="cuda", generator=g)
        acc.update(x, x[:, : d // 4] + torch.randn(batch_size, d // 4, device="cuda", generator=g))
    value = acc.result()
    torch.cuda.synchronize()
    return {
        "n": n,
        "d": d,
        "gpu": torch.cuda.get_device_name(),
        "cka_s": time.perf_counter() - t0,
        "cka": value,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--d-y", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--cap-gb", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dask", action="store_true", help="also time the Dask threaded reduction")
    ap.add_argument("--quick", action="store_true", help="n = 2000, 20000 at d = 512")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated Zarr data")
    ap.add_argument("--out", default="benchmarks/results/bench_outofcore.json")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.d_y, args.cap_gb = [2_000, 20_000], 512, 128, 1.0
    if args.one:
        print("JSON:" + json.dumps(one(Path(args.workdir), args.n[0], args.batch_size, args.dask)))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="repsim-ooc-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n_max = max(args.n)
    results: dict = {
        "benchmark": "outofcore_cka",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cap_gb": args.cap_gb,
        "d": args.d,
        "d_y": args.d_y,
        "batch_size": args.batch_size,
        "runs": [],
    }
    try:
        meta = workdir / "meta.json"
        want = {"n": n_max, "d": args.d, "d_y": args.d_y, "seed": args.seed}
        if not (meta.exists() and json.loads(meta.read_text()) == want):
            print(
                f"writing X [{n_max} x {args.d}] ({n_max * args.d * 4 / 1e9:.2f} GB float32) "
                f"and Y [{n_max} x {args.d_y}] to {workdir} ...",
                flush=True,
            )
            results["generate"] = generate(workdir, n_max, args.d, args.d_y, args.seed)
            meta.write_text(json.dumps(want))
            print(f"  written in {results['generate']['write_s']:.1f} s", flush=True)
        print(
            f"{'n':>8} {'X GB':>6} {'read s':>7} {'CKA s':>7} {'CKA/read':>8} "
            f"{'s/1k rows':>9} {'CPU s/1k':>8} {'peak RSS MB':>11} {'under cap':>9}",
            flush=True,
        )
        for n in sorted(args.n):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                "--workdir",
                str(workdir),
                "--n",
                str(n),
                "--batch-size",
                str(args.batch_size),
                *(["--dask"] if args.dask else []),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"run for n={n} failed")
            r = json.loads(
                next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON:"))[5:]
            )
            r["under_cap"] = r["peak_rss_mb"] < args.cap_gb * 1024
            results["runs"].append(r)
            print(
                f"{n:>8} {r['x_gb']:>6.2f} {r['read_s']:>7.1f} {r['cka_s']:>7.1f} "
                f"{r['cka_over_read']:>8.2f} {r['s_per_1000_rows']:>9.3f} "
                f"{r['cpu_s_per_1000_rows']:>8.3f} "
                f"{r['peak_rss_mb']:>11.0f} {str(r['under_cap']):>9}"
                + (f"  dask {r['dask_threads_s']:.1f} s" if args.dask else ""),
                flush=True,
            )
        runs = results["runs"]
        if len(runs) > 1:
            a, b = runs[0], runs[-1]
            results["scaling"] = {
                "n_ratio": b["n"] / a["n"],
                "time_ratio": b["cka_s"] / a["cka_s"],
                "cpu_time_ratio": b["cka_cpu_s"] / a["cka_cpu_s"],
                "peak_rss_ratio": b["peak_rss_mb"] / a["peak_rss_mb"],
            }
            s = results["scaling"]
            print(
                f"n x{s['n_ratio']:.1f}: time x{s['time_ratio']:.2f}, "
                f"CPU time x{s['cpu_time_ratio']:.2f}, "
                f"peak RSS x{s['peak_rss_ratio']:.2f}",
                flush=True,
            )
        results["gpu"] = gpu_figures(min(args.n), args.d, args.batch_size)
        if results["gpu"]:
            print(f"GPU ({results['gpu']['gpu']}): {results['gpu']['cka_s']:.2f} s", flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
