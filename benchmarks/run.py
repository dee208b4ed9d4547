"""Run every repsim benchmark with one command and write one JSON file per run.

Run from the repository root::

    python benchmarks/run.py                # the full suite (tens of minutes on 2 cores)
    python benchmarks/run.py --quick        # small sizes: a smoke test in a few minutes
    python benchmarks/run.py --only cka outofcore

Suites (each is a script in ``benchmarks/`` that also runs alone; this driver calls them in
subprocesses and gathers their JSON):

* ``capture``: capture into the Zarr store vs a bare forward pass (``bench_capture.py``),
  time ratio and peak memory above baseline, per ``n``.
* ``cka``: linear CKA vs the in-run float64 matmul roofline and the PyPI peers, SVCCA, the
  all-pairs layer matrix (``bench_cka.py``).
* ``outofcore``: streaming linear CKA from Zarr on matrices larger than a memory cap, peak RSS
  and time as ``n`` grows 10x (``bench_outofcore.py``), and GPU figures when CUDA is present.
* ``dask``: the Dask reduction on the threaded scheduler and on a 2-worker ``LocalCluster``
  vs the single-process accumulator, on the same arrays (this file).

Output: ``benchmarks/results/<UTC time>-<git commit>.json`` holding the machine, the commit,
and each suite's results (or its error), plus ``benchmarks/results/latest.json``. Compare runs
across commits with ``python benchmarks/run.py --compare OLD.json NEW.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
SUITES = ("targets", "capture", "cka", "outofcore", "dask")


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=timeout)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def suite_targets(quick: bool, timeout: int) -> dict:
    """Every target row of issue 16 as a ratio to its in-run floor (``bench_targets.py``)."""
    out = Path(tempfile.mkdtemp(prefix="repsim-bench-")) / "targets.json"
    args = ["--quick"] if quick else []
    _run([sys.executable, str(BENCH / "bench_targets.py"), *args, "--out", str(out)], timeout)
    return json.loads(out.read_text())


def suite_capture(quick: bool, timeout: int) -> dict:
    script = BENCH / "bench_capture.py"
    if not script.exists():
        return {"skipped": "benchmarks/bench_capture.py not present"}
    sizes = [2_000, 8_000] if quick else [10_000, 40_000]
    runs = []
    for n in sizes:
        proc = _run([sys.executable, str(script), "--one", "--n", str(n)], timeout)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"runs": runs}


def suite_cka(quick: bool, timeout: int) -> dict:
    script = BENCH / "bench_cka.py"
    if not script.exists():
        return {"skipped": "benchmarks/bench_cka.py not present"}
    out = Path(tempfile.mkdtemp(prefix="repsim-bench-")) / "cka.json"
    _run([sys.executable, str(script), *(["--quick"] if quick else []), "--out", str(out)], timeout)
    return json.loads(out.read_text())


def suite_outofcore(quick: bool, timeout: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="repsim-bench-")) / "ooc.json"
    args = ["--quick"] if quick else ["--n", "20000", "200000", "--d", "4096", "--cap-gb", "1"]
    _run([sys.executable, str(BENCH / "bench_outofcore.py"), *args, "--out", str(out)], timeout)
    return json.loads(out.read_text())


def suite_dask(quick: bool, timeout: int) -> dict:
    """Dask reduction (threads, LocalCluster 2 workers) vs one process, same Zarr arrays."""
    import numpy as np
    import zarr

    sys.path.insert(0, str(ROOT))
    from repsim.scale.dask import distributed_cka
    from repsim.similarity.outofcore import stream_cka

    n, d = (20_000, 256) if quick else (100_000, 1024)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="repsim-bench-dask-"))
    zx = zarr.create_array(str(tmp / "x"), shape=(n, d), chunks=(4096, d), dtype="f4")
    zy = zarr.create_array(str(tmp / "y"), shape=(n, d // 4), chunks=(4096, d // 4), dtype="f4")
    for i in range(0, n, 4096):
        m = min(4096, n - i)
        x = rng.standard_normal((m, d), dtype=np.float32)
        zx[i : i + m] = x
        zy[i : i + m] = x[:, : d // 4] + rng.standard_normal((m, d // 4), dtype=np.float32)
    res: dict = {"n": n, "d": d, "d_y": d // 4, "timing": "best of 2 (the first warms up)"}

    def best_of_2(fn):
        times, value = [], None
        for _ in range(2):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times), value

    res["single_process_s"], ref = best_of_2(
        lambda: stream_cka(zx, zy, batch_size=4096, progress=False)
    )
    res["dask_threads_s"], v = best_of_2(lambda: distributed_cka(zx, zy))
    res["dask_threads_abs_diff"] = abs(v - ref)
    try:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as lc,
            Client(lc) as client,
        ):
            res["localcluster_2_workers_s"], v = best_of_2(
                lambda: distributed_cka(zx, zy, scheduler=client)
            )
            res["localcluster_abs_diff"] = abs(v - ref)
    except ImportError:
        res["localcluster"] = "dask.distributed not installed"
    for k in ("dask_threads_s", "localcluster_2_workers_s"):
        if k in res:
            res[k.replace("_s", "_over_single")] = res[k] / res["single_process_s"]
    print(json.dumps(res, indent=2), flush=True)
    return res


def compare(old: Path, new: Path) -> None:
    """Print every numeric leaf that both result files hold, with the new/old ratio."""
    a, b = json.loads(old.read_text()), json.loads(new.read_text())

    def leaves(d: object, prefix: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        if isinstance(d, dict):
            for k, v in d.items():
                out.update(leaves(v, f"{prefix}{k}."))
        elif isinstance(d, list):
            for i, v in enumerate(d):
                out.update(leaves(v, f"{prefix}{i}."))
        elif isinstance(d, int | float) and not isinstance(d, bool):
            out[prefix[:-1]] = float(d)
        return out

    la, lb = leaves(a.get("suites", a)), leaves(b.get("suites", b))
    print(f"{'metric':<70} {'old':>12} {'new':>12} {'new/old':>8}")
    for k in sorted(set(la) & set(lb)):
        ratio = lb[k] / la[k] if la[k] else float("nan")
        print(f"{k:<70} {la[k]:>12.4g} {lb[k]:>12.4g} {ratio:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per suite")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), type=Path)
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    import torch

    report: dict = {
        "commit": _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "suites": {},
    }
    for name in args.only:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            report["suites"][name] = globals()[f"suite_{name}"](args.quick, args.timeout)
        except Exception as exc:  # noqa: BLE001 - one failing suite must not lose the others
            print(f"suite {name} failed: {exc}", file=sys.stderr, flush=True)
            report["suites"][name] = {"error": str(exc)}
        report["suites"][name]["suite_wall_s"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{stamp}-{report['commit']}.json"
    text = json.dumps(report, indent=2, default=float)
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
