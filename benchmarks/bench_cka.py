"""Benchmark repsim's similarity measures against an in-run roofline and peer libraries.

Run from the repository root::

    python benchmarks/bench_cka.py                 # full: n=10000, d=4096 (minutes)
    python benchmarks/bench_cka.py --quick         # small sizes, a smoke test
    python benchmarks/bench_cka.py --peer-python /tmp/benchenv/bin/python

1. Linear CKA (n x d, d = 4096) against the three matrix products it needs, X^T X, Y^T Y and
   X^T Y in float64 (numpy/OpenBLAS), timed in the same run: the roofline. repsim forms the two
   symmetric products with BLAS ``dsyrk`` (half a product each), so it can beat this roofline.
2. Peers from PyPI, installed in a *separate* environment (``--peer-python``), on the same
   arrays: torch-cka (AntixK/PyTorch-Model-Compare; its full-batch debiased HSIC on n x n Grams)
   and ``repsim`` 0.1.5 from PyPI (an unrelated project of the same name; C++ Gram-based CKA).
   A peer that does not import or run is reported and skipped.
3. SVCCA at d = 1024 (and the peer's SVCCA).
4. An all-pairs 10 x 10 layer matrix: ``compare(pairs="all")`` against 100 independent
   ``cka`` calls and the peer's pairwise ``cka``.

Timings are wall-clock best-of-``--repeats``. Results are printed and written as JSON to
``benchmarks/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repsim.similarity import cka, compare, svcca  # noqa: E402


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def make_pair(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = 0.6 * X[:, rng.permutation(d)] + 0.8 * rng.standard_normal((n, d))
    np.maximum(Y, 0, out=Y)  # post-ReLU-like, not centered
    return X, Y


PEER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, types
    import numpy as np
    task, folder, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {}

    def best(fn):
        b, v = float("inf"), None
        for _ in range(repeats):
            t0 = time.perf_counter(); v = fn(); b = min(b, time.perf_counter() - t0)
        return b, v

    if task == "torch-cka":
        X = np.load(folder + "/X.npy"); Y = np.load(folder + "/Y.npy")
        import torch, torch_cka
        shim = types.SimpleNamespace(device="cpu")
        def tcka():
            x = torch.from_numpy(X).float(); y = torch.from_numpy(Y).float()
            K = x @ x.t(); K.fill_diagonal_(0.0)
            L = y @ y.t(); L.fill_diagonal_(0.0)
            hkl = torch_cka.CKA._HSIC(shim, K, L)
            hkk = torch_cka.CKA._HSIC(shim, K, K)
            hll = torch_cka.CKA._HSIC(shim, L, L)
            return hkl / (hkk ** 0.5 * hll ** 0.5)
        t, v = best(tcka)
        out = {"seconds": t, "value": float(v)}
    elif task == "repsim015-cka":
        X = np.load(folder + "/X.npy"); Y = np.load(folder + "/Y.npy")
        import repsim
        t, v = best(lambda: repsim.cka([X, Y], "linear", "gretton"))
        out = {"seconds": t, "value": float(v[0, 1])}
    elif task == "repsim015-svcca":
        X = np.load(folder + "/X.npy"); Y = np.load(folder + "/Y.npy")
        import repsim
        t, v = best(lambda: repsim.svcca([X, Y]))
        out = {"seconds": t, "value": float(v[0, 1]), "note": "Yanai GCD summary, not mean CCA"}
    elif task == "repsim015-allpairs":
        layers = [np.load(folder + f"/L{i}.npy") for i in range(10)]
        import repsim
        t, v = best(lambda: repsim.cka(layers, "linear", "gretton"))
        out = {"seconds": t, "value": float(v[0, 1])}
    print("JSON:" + json.dumps(out))
    """
)


PEER_NAMES = {
    "torch-cka": "torch-cka 0.21 (debiased HSIC, float32, one full batch)",
    "repsim015-cka": "repsim 0.1.5 from PyPI (linear, gretton)",
    "repsim015-svcca": "repsim 0.1.5 from PyPI svcca",
    "repsim015-allpairs": "repsim 0.1.5 from PyPI cka over the 10 layers",
}


def run_peers(
    python: str | None, tasks: list[str], folder: str, repeats: int, timeout: int
) -> dict:
    """Run each peer task in its own subprocess of the peer environment, with its own timeout."""
    if not python:
        return {"skipped": "no --peer-python given"}
    if not Path(python).exists():
        return {"skipped": f"{python} not found; see the module docstring"}
    script = Path(folder) / "peer.py"
    script.write_text(PEER_SCRIPT)
    out = {}
    for task in tasks:
        name = PEER_NAMES[task]
        try:
            proc = subprocess.run(
                [python, str(script), task, folder, str(repeats)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            out[name] = {"timed_out_after_s": timeout}
            print(f"  peer {name}: did not finish within {timeout} s")
            continue
        res = None
        for line in proc.stdout.splitlines():
            if line.startswith("JSON:"):
                res = json.loads(line[5:])
        out[name] = res if res is not None else {"error": (proc.stderr or proc.stdout)[-400:]}
        print(f"  peer {name}: {out[name]}")
    return out


def _speedups(peers: dict, ours: float) -> None:
    for res in peers.values():
        if isinstance(res, dict) and "seconds" in res:
            res["repsim_speedup"] = res["seconds"] / ours
        elif isinstance(res, dict) and "timed_out_after_s" in res:
            res["repsim_speedup_at_least"] = res["timed_out_after_s"] / ours


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--peer-python", default="/tmp/benchenv/bin/python")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--peer-timeout", type=int, default=420)
    p.add_argument("--out", default="benchmarks/results/bench_cka.json")
    p.add_argument(
        "--sections",
        default="cka,svcca,allpairs",
        help="comma-separated subset of cka,svcca,allpairs",
    )
    p.add_argument(
        "--skip-ours-cka",
        action="store_true",
        help="in the cka section, run only the peers (reuse earlier repsim figures)",
    )
    args = p.parse_args()
    sections = set(args.sections.split(","))

    n, d = (2000, 512) if args.quick else (10_000, 4096)
    n_svcca, d_svcca = (2000, 256) if args.quick else (5_000, 1024)
    n_ap, d_ap = (1000, 128) if args.quick else (5_000, 256)
    r = args.repeats
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
        },
        "sizes": {"cka": [n, d], "svcca": [n_svcca, d_svcca], "allpairs": [10, n_ap, d_ap]},
    }

    folder = tempfile.mkdtemp(prefix="bench_cka_")
    # 1. linear CKA vs roofline
    X, Y = make_pair(n, d, 0) if "cka" in sections else (None, None)
    if "cka" in sections and not args.skip_ours_cka:
        t_xx, _ = best_time(lambda: X.T @ X, r)
        t_yy, _ = best_time(lambda: Y.T @ Y, r)
        t_xy, _ = best_time(lambda: X.T @ Y, r)
        roof = t_xx + t_yy + t_xy
        t_cka, v_cka = best_time(lambda: cka(X, Y), r)
        t_deb, v_deb = best_time(lambda: cka(X, Y, debiased=True), r)
        X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
        t_f32, v_f32 = best_time(lambda: cka(X32, Y32), r)
        results["linear_cka"] = {
            "roofline_three_matmuls_s": roof,
            "matmul_s": {"XtX": t_xx, "YtY": t_yy, "XtY": t_xy},
            "repsim_cka_s": t_cka,
            "ratio_to_roofline": t_cka / roof,
            "value": v_cka,
            "repsim_cka_debiased_s": t_deb,
            "debiased_ratio_to_roofline": t_deb / roof,
            "value_debiased": v_deb,
            "repsim_cka_float32_input_s": t_f32,
            "value_float32_input": v_f32,
        }
        print(f"linear CKA n={n} d={d}: roofline (3 float64 matmuls) {roof:.2f} s")
        print(f"  repsim cka          {t_cka:.2f} s  ratio {t_cka / roof:.2f}  value {v_cka:.6f}")
        print(f"  repsim cka debiased {t_deb:.2f} s  ratio {t_deb / roof:.2f}  value {v_deb:.6f}")
        print(f"  repsim cka float32  {t_f32:.2f} s  ratio {t_f32 / roof:.2f}")
        X32 = Y32 = None  # free memory before the peers run
    if "cka" in sections:
        np.save(Path(folder) / "X.npy", X)
        np.save(Path(folder) / "Y.npy", Y)
        X = Y = None
        peers = run_peers(
            args.peer_python, ["torch-cka", "repsim015-cka"], folder, 1, args.peer_timeout
        )
        if "linear_cka" in results:
            _speedups(peers, results["linear_cka"]["repsim_cka_s"])
        results.setdefault("linear_cka", {})["peers"] = peers

    if "svcca" in sections:
        Xs, Ys = make_pair(n_svcca, d_svcca, 1)
        t_sv, v_sv = best_time(lambda: svcca(Xs, Ys), r)
        t_svd, _ = best_time(
            lambda: (
                np.linalg.svd(Xs, full_matrices=False),
                np.linalg.svd(Ys, full_matrices=False),
            ),
            1,
        )
        results["svcca"] = {
            "repsim_s": t_sv,
            "value": v_sv,
            "two_svds_s": t_svd,
            "ratio_to_two_svds": t_sv / t_svd,
        }
        print(
            f"SVCCA n={n_svcca} d={d_svcca}: {t_sv:.2f} s (two SVDs alone {t_svd:.2f} s), "
            f"value {v_sv:.6f}"
        )
        for f in Path(folder).glob("*.npy"):
            f.unlink()
        np.save(Path(folder) / "X.npy", Xs)
        np.save(Path(folder) / "Y.npy", Ys)
        peers = run_peers(args.peer_python, ["repsim015-svcca"], folder, 1, args.peer_timeout)
        _speedups(peers, t_sv)
        results["svcca"]["peers"] = peers
        Xs = Ys = None

    if "allpairs" in sections:
        rng = np.random.default_rng(2)
        layers = {}
        h = rng.standard_normal((n_ap, d_ap))
        for i in range(10):
            h = np.maximum(h @ (rng.standard_normal((d_ap, d_ap)) / np.sqrt(d_ap)), 0) + 0.1 * h
            layers[f"layer{i}"] = h
        t_all, table = best_time(lambda: compare(layers, layers, pairs="all"), r)
        names = list(layers)
        t_naive, M = best_time(
            lambda: np.array([[cka(layers[a], layers[b]) for b in names] for a in names]), 1
        )
        agree = float(np.abs(table.matrix("cka").values - M).max())
        results["allpairs"] = {
            "repsim_compare_all_s": t_all,
            "naive_100_calls_s": t_naive,
            "speedup_vs_naive": t_naive / t_all,
            "max_abs_diff": agree,
        }
        print(
            f"all pairs 10x10 n={n_ap} d={d_ap}: compare {t_all:.2f} s, 100 cka calls "
            f"{t_naive:.2f} s ({t_naive / t_all:.1f}x), max |diff| {agree:.1e}"
        )
        for f in Path(folder).glob("*.npy"):
            f.unlink()
        for i, name in enumerate(names):
            np.save(Path(folder) / f"L{i}.npy", layers[name])
        peers = run_peers(args.peer_python, ["repsim015-allpairs"], folder, 1, args.peer_timeout)
        _speedups(peers, t_all)
        results["allpairs"]["peers"] = peers

    shutil.rmtree(folder, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
