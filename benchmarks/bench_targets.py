"""The speed and scale targets of issue 16, each as a ratio to a floor measured in the same run.

Run from the repository root (pin the BLAS threads; the figures are ratios, so they transfer
across machines better than times do)::

    OMP_NUM_THREADS=2 python benchmarks/bench_targets.py            # full sizes (~15-30 min)
    OMP_NUM_THREADS=2 python benchmarks/bench_targets.py --quick    # small sizes, a smoke test
    python benchmarks/bench_targets.py --only linear rbf --peer-python /work/venvs/peers/bin/python

Each row runs in a fresh subprocess (so peak memory is that figure's alone), times the figure
and its floor interleaved, best of ``--repeats``:

=============  ==============================================  ================================
row            figure                                          floor
=============  ==============================================  ================================
linear         ``cka(X, Y)`` n=10k, d=4096 float64 (+ peak     ``X.T@X``, ``Y.T@Y``, ``X.T@Y``
               memory above the inputs, VmHWM)                 (three float64 GEMMs)
rbf            ``cka(X, Y, kernel="rbf")`` biased, debiased    ``X@X.T``, ``Y@Y.T`` (its n x n
                                                               products)
float32        ``cka(X, Y, precision="float32")`` + error      three float32 GEMMs
stream         ``stream_cka`` of d=65,536, n=4,000 from Zarr:  an independent in-memory Gram
               peak RSS, value                                 (numpy, column chunks)
compare        ``repsim compare`` default (bootstrap CIs),     the same with ``n_boot=0``
               quickstart CNNs, 5 layers, groups
capture        capture into Zarr; a cache hit                  a bare forward; reading the
                                                               cached arrays
allpairs       10 x 10 CKA ``compare(pairs="all")`` in         110 float64 GEMMs (the ideal);
               memory; the same from Zarr                      the in-memory run
peers          ckatorch, torch-cka (their own venv,            the float64 three-GEMM floor
               ``--peer-python``), one thread
=============  ==============================================  ================================

Results are printed as a table and written to ``benchmarks/results/bench_targets.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMON = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, ROOT)
    import numpy as np

    def rss_mb(field="VmRSS"):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def interleaved(fns, repeats):
        best = [float("inf")] * len(fns)
        out = [None] * len(fns)
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                out[i] = fn()
                best[i] = min(best[i], time.perf_counter() - t0)
        return best, out

    def make_pair(n, d, seed, dtype=np.float64):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, d))
        Y = 0.6 * X[:, rng.permutation(d)] + 0.8 * rng.standard_normal((n, d))
        np.maximum(Y, 0, out=Y)
        return X.astype(dtype, copy=False), Y.astype(dtype, copy=False)
    """
)

SCRIPTS = {
    "linear": """
        from repsim.similarity import cka
        X, Y = make_pair(S["n"], S["d"], 0)
        inputs = (X.nbytes + Y.nbytes) / 2**20
        floor = lambda: (X.T @ X, Y.T @ Y, X.T @ Y)
        best, out = interleaved([floor, lambda: cka(X, Y)], S["repeats"])
        before = rss_mb()
        ok = reset_peak()
        cka(X, Y)
        extra = rss_mb("VmHWM") - before if ok else float("nan")
        R = {"floor_s": best[0], "cka_s": best[1], "ratio": best[1] / best[0],
             "inputs_mb": inputs, "peak_above_inputs_mb": extra,
             "peak_ratio": (inputs + extra) / inputs, "value": out[1]}
    """,
    "rbf": """
        from repsim.similarity import cka
        X, Y = make_pair(S["n_rbf"], S["d_rbf"], 1)
        floor = lambda: (X @ X.T, Y @ Y.T)
        best, out = interleaved(
            [floor, lambda: cka(X, Y, kernel="rbf"), lambda: cka(X, Y, kernel="rbf", debiased=True)],
            S["repeats"])
        R = {"floor_s": best[0], "biased_s": best[1], "debiased_s": best[2],
             "ratio_biased": best[1] / best[0], "ratio_debiased": best[2] / best[0],
             "value_biased": out[1], "value_debiased": out[2]}
    """,
    "float32": """
        from repsim.similarity import cka
        X, Y = make_pair(S["n"], S["d"], 0)
        X32, Y32 = X.astype(np.float32), Y.astype(np.float32)  # activations as captured
        floor = lambda: (X32.T @ X32, Y32.T @ Y32, X32.T @ Y32)
        best, out = interleaved(
            [floor, lambda: cka(X32, Y32, precision="float32"),
             lambda: cka(X, Y, precision="float32")], S["repeats"])
        exact = cka(X32, Y32)  # float64 CKA of the same (float32) activations
        deb = cka(X32, Y32, debiased=True)
        deb32 = cka(X32, Y32, debiased=True, precision="float32")
        R = {"floor_s": best[0], "cka_s": best[1], "ratio": best[1] / best[0],
             "float64_inputs_s": best[2], "ratio_float64_inputs": best[2] / best[0],
             "rel_error": abs(out[1] - exact) / abs(exact),
             "rel_error_debiased": abs(deb32 - deb) / abs(deb)}
    """,
    "stream_write": """
        import zarr
        n, d = S["n_stream"], S["d_stream"]
        rng = np.random.default_rng(3)
        comp = zarr.codecs.BloscCodec(cname="zstd", clevel=1)
        rows = max(1, 2**21 // (4 * d))
        za = zarr.create_array(S["folder"] + "/x.zarr", shape=(n, d), chunks=(rows, d),
                               dtype="float32", compressors=[comp], overwrite=True)
        zb = zarr.create_array(S["folder"] + "/y.zarr", shape=(n, d // 2), chunks=(rows, d // 2),
                               dtype="float32", compressors=[comp], overwrite=True)
        W = rng.standard_normal((64, d)).astype(np.float32)
        for i in range(0, n, 512):
            m = min(512, n - i)
            h = rng.standard_normal((m, 64)).astype(np.float32)
            x = np.maximum(h @ W + 0.5 * rng.standard_normal((m, d), dtype=np.float32), 0) + 3
            za[i:i + m] = x
            zb[i:i + m] = x[:, : d // 2] + rng.standard_normal((m, d // 2), dtype=np.float32)
        R = {"written": True}
    """,
    "stream": """
        import zarr
        from repsim.similarity import stream_cka
        za = zarr.open_array(S["folder"] + "/x.zarr", mode="r")
        zb = zarr.open_array(S["folder"] + "/y.zarr", mode="r")
        base = rss_mb()
        t0 = time.perf_counter()
        v = stream_cka(za, zb, memory_limit=S["stream_limit"])
        vd = stream_cka(za, zb, debiased=True, memory_limit=S["stream_limit"])
        R = {"stream_s": time.perf_counter() - t0, "value": v, "value_debiased": vd,
             "peak_rss_mb": rss_mb("VmHWM"), "rss_after_imports_mb": base}
    """,
    "stream_check": """
        import zarr
        za = zarr.open_array(S["folder"] + "/x.zarr", mode="r")
        zb = zarr.open_array(S["folder"] + "/y.zarr", mode="r")
        t0 = time.perf_counter()

        def gram(z):  # independent: plain numpy on column chunks, centred in float64
            X = z[:]
            n, d = X.shape
            K = np.zeros((n, n))
            for j in range(0, d, 4096):
                B = X[:, j:j + 4096].astype(np.float64)
                B -= B.mean(0)
                K += B @ B.T
            return K

        K = gram(za)
        L = gram(zb)
        n = K.shape[0]
        v = float((K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum()))
        k, l = np.diag(K).copy(), np.diag(L).copy()
        def hs(A, B, a, b):
            c = (A * B).sum(); kl = a @ b
            return (c - kl + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 * kl / (n - 2)) / (n * (n - 3))
        vd = float(hs(K, L, k, l) / np.sqrt(hs(K, K, k, k) * hs(L, L, l, l)))
        R = {"value": v, "value_debiased": vd, "check_s": time.perf_counter() - t0}
    """,
    "compare": """
        import torch, warnings
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        from repsim.models import build_model, save_model
        from repsim.pipeline.compare_report import compare_report
        paths = []
        for seed in (0, 1):
            m = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=seed)
            paths.append(save_model(m, S["folder"] + f"/m{seed}"))
        layers = ["features.relu1", "features.relu2", "features.relu3", "relu", "classifier"]
        def run(n_boot):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return compare_report(*paths, data="digits-imbalanced", layers=layers,
                                      out=S["folder"] + f"/rep{n_boot}", n_boot=n_boot,
                                      progress=False)
        best, _ = interleaved([lambda: run(0), lambda: run(200)], S["repeats"])
        R = {"no_bootstrap_s": best[0], "default_s": best[1], "ratio": best[1] / best[0]}
    """,
    "capture": """
        import shutil, torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        from repsim.capture import record
        from repsim.capture.store import ActivationStore
        from repsim.data import load_dataset
        from repsim.models import build_model
        data = load_dataset("digits").test
        model = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=0).eval()
        layers = ["features.relu1", "features.relu2", "features.relu3", "relu", "classifier"]
        x = torch.as_tensor(np.asarray(data.x), dtype=torch.float32)
        def bare():
            with torch.no_grad():
                for i in range(0, len(x), 256):
                    model(x[i:i + 256])
        store_dir = S["folder"] + "/capture"
        def capture():
            shutil.rmtree(store_dir, ignore_errors=True)
            return record(model, data, layers, store=ActivationStore(store_dir), progress=False,
                          batch_size=256)
        best, out = interleaved([bare, capture], S["repeats"])
        cap = out[1]
        def hit():
            return record(model, data, layers, store=ActivationStore(store_dir), progress=False,
                          batch_size=256)
        def read():
            return [np.asarray(cap[name][:]) for name in layers]
        best2, _ = interleaved([read, hit], S["repeats"])
        R = {"bare_forward_s": best[0], "capture_s": best[1], "capture_ratio": best[1] / best[0],
             "read_cached_s": best2[0], "cache_hit_s": best2[1],
             "cache_hit_ratio": best2[1] / best2[0]}
    """,
    "allpairs": """
        import zarr
        from repsim.similarity import compare
        rng = np.random.default_rng(2)
        n, d = S["n_ap"], S["d_ap"]
        layers = {}
        h = rng.standard_normal((n, d))
        for i in range(10):
            h = np.maximum(h @ (rng.standard_normal((d, d)) / np.sqrt(d)), 0) + 0.1 * h
            layers[f"layer{i}"] = h.copy()
        cen = [v - v.mean(0) for v in layers.values()]
        def ideal():  # 100 cross products and 10 self products, as independent pairs need
            for a in cen:
                for b in cen:
                    a.T @ b
            for a in cen:
                a.T @ a
        zl = {}
        for k, v in layers.items():
            z = zarr.create_array(S["folder"] + f"/{k}.zarr", shape=v.shape,
                                  chunks=(max(1, 2**21 // (8 * d)), d), dtype="float64",
                                  overwrite=True)
            z[:] = v
            zl[k] = z
        best, out = interleaved(
            [ideal, lambda: compare(layers, layers, pairs="all"),
             lambda: compare(zl, zl, pairs="all")], S["repeats"])
        M1, M2 = out[1].matrix("cka").values, out[2].matrix("cka").values
        R = {"ideal_110_products_s": best[0], "in_memory_s": best[1], "from_zarr_s": best[2],
             "in_memory_vs_ideal": best[1] / best[0], "zarr_vs_in_memory": best[2] / best[1],
             "max_abs_diff": float(np.abs(M1 - M2).max())}
    """,
    "peer_floor": """
        X, Y = make_pair(S["n"], S["d"], 0)
        best, _ = interleaved([lambda: (X.T @ X, Y.T @ Y, X.T @ Y)], S["repeats"])
        from repsim.similarity import cka
        best2, out = interleaved([lambda: cka(X, Y)], S["repeats"])
        np.save(S["folder"] + "/X.npy", X.astype(np.float32))
        np.save(S["folder"] + "/Y.npy", Y.astype(np.float32))
        R = {"floor_s": best[0], "repsim_s": best2[0], "value": out[0]}
    """,
}

PEER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    torch.set_num_threads(1)
    task, folder = sys.argv[1], sys.argv[2]
    X = torch.from_numpy(np.load(folder + "/X.npy")); Y = torch.from_numpy(np.load(folder + "/Y.npy"))
    t0 = time.perf_counter()
    if task == "ckatorch":
        from ckatorch.core import cka_base
        v = float(cka_base(X, Y))
    else:
        import types, torch_cka
        shim = types.SimpleNamespace(device="cpu")
        K = X @ X.T; K.fill_diagonal_(0.0)
        L = Y @ Y.T; L.fill_diagonal_(0.0)
        v = float(torch_cka.CKA._HSIC(shim, K, L)
                  / (torch_cka.CKA._HSIC(shim, K, K) ** 0.5 * torch_cka.CKA._HSIC(shim, L, L) ** 0.5))
    print("JSON:" + json.dumps({"seconds": time.perf_counter() - t0, "value": v}))
    """
)


def run_script(name: str, sizes: dict, timeout: int, env: dict | None = None) -> dict:
    code = COMMON + f"\nROOT = {str(ROOT)!r}\nS = {sizes!r}\n" + textwrap.dedent(SCRIPTS[name])
    code = code.replace("sys.path.insert(0, ROOT)", f"sys.path.insert(0, {str(ROOT)!r})")
    code += "\nprint('JSON:' + json.dumps(R, default=float))\n"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("JSON:"):
            return json.loads(line[5:])
    return {"error": (proc.stderr or proc.stdout)[-800:]}


def run_peer(python: str, task: str, folder: str, timeout: int) -> dict:
    if not python or not Path(python).exists():
        return {"skipped": f"no peer environment at {python!r}"}
    script = Path(folder) / "peer.py"
    script.write_text(PEER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            [python, str(script), task, folder],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("JSON:"):
            return json.loads(line[5:])
    return {"error": (proc.stderr or proc.stdout)[-400:]}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, help="rows to run")
    p.add_argument("--peer-python", default="/work/venvs/peers16/bin/python")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", default="benchmarks/results/bench_targets.json")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="bench_targets_")
    if args.quick:
        sizes = dict(
            n=2000,
            d=512,
            n_rbf=1000,
            d_rbf=512,
            n_stream=500,
            d_stream=4096,
            n_ap=1000,
            d_ap=64,
            stream_limit="1GB",
        )
    else:
        sizes = dict(
            n=10_000,
            d=4096,
            n_rbf=4000,
            d_rbf=4096,
            n_stream=4000,
            d_stream=65_536,
            n_ap=5000,
            d_ap=256,
            stream_limit="1GB",
        )
    sizes.update(repeats=args.repeats, folder=folder)
    rows = args.only or [
        "linear",
        "float32",
        "rbf",
        "stream",
        "compare",
        "capture",
        "allpairs",
        "peers",
    ]
    res: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": os.getloadavg(),
        },
        "sizes": {k: v for k, v in sizes.items() if k != "folder"},
    }
    for row in rows:
        t0 = time.time()
        if row == "stream":
            w = run_script("stream_write", sizes, args.timeout)
            r = run_script("stream", sizes, args.timeout) if "error" not in w else w
            c = run_script("stream_check", sizes, args.timeout) if "error" not in r else {}
            if "error" not in r and c and "error" not in c:
                r["abs_diff_vs_in_memory_gram"] = abs(r["value"] - c["value"])
                r["abs_diff_debiased"] = abs(r["value_debiased"] - c["value_debiased"])
            r["check"] = c
        elif row == "peers":
            r = run_script("peer_floor", sizes, args.timeout)
            if "error" not in r:
                for task in ("ckatorch", "torch-cka"):
                    pr = run_peer(args.peer_python, task, folder, args.timeout)
                    if "seconds" in pr:
                        pr["ratio_to_float64_floor"] = pr["seconds"] / r["floor_s"]
                    r[task] = pr
        else:
            r = run_script(row, sizes, args.timeout)
        res[row] = r
        print(f"[{row}] ({time.time() - t0:.0f} s) {json.dumps(r, default=float)}", flush=True)
    print_table(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float))
    print(f"wrote {out}")


def _fmt(x: object, spec: str = ".2f") -> str:
    return format(x, spec) if isinstance(x, int | float) else "-"


def print_table(res: dict) -> None:
    """Every target row: the measured ratio, the target, met or not, and the floor used."""
    rows = []

    def add(name: str, value: object, target: float, floor: str, extra: str = "") -> None:
        met = isinstance(value, int | float) and value <= target
        rows.append((name, _fmt(value), f"<= {target}", "yes" if met else "NO", floor, extra))

    lin = res.get("linear", {})
    add("linear CKA / three float64 GEMMs", lin.get("ratio"), 1.15, "X^TX, Y^TY, X^TY float64")
    add(
        "  peak memory / inputs",
        lin.get("peak_ratio"),
        1.2,
        "the inputs' bytes",
        f"+{_fmt(lin.get('peak_above_inputs_mb'), '.0f')} MB",
    )
    rbf = res.get("rbf", {})
    add("RBF CKA biased / n x n products", rbf.get("ratio_biased"), 1.5, "X X^T, Y Y^T")
    add("RBF CKA debiased / n x n products", rbf.get("ratio_debiased"), 1.5, "X X^T, Y Y^T")
    f32 = res.get("float32", {})
    add(
        "float32 CKA / three float32 GEMMs",
        f32.get("ratio"),
        1.2,
        "float32 GEMMs",
        f"float32 inputs (float64 inputs: {_fmt(f32.get('ratio_float64_inputs'))})",
    )
    add("  float32 relative error", f32.get("rel_error"), 1e-6, "float64 cka")
    st = res.get("stream", {})
    add(
        "streaming d=65536 |diff| vs in-memory Gram",
        st.get("abs_diff_vs_in_memory_gram"),
        1e-10,
        "numpy Gram in memory",
    )
    add("  peak RSS (GB)", (st.get("peak_rss_mb") or float("nan")) / 1024, 2.0, "-")
    cmp_ = res.get("compare", {})
    add("repsim compare default / no bootstrap", cmp_.get("ratio"), 3.0, "n_boot=0")
    cap = res.get("capture", {})
    add("capture into Zarr / bare forward", cap.get("capture_ratio"), 1.2, "bare forward")
    add("cache hit / reading the arrays", cap.get("cache_hit_ratio"), 1.1, "zarr reads")
    ap = res.get("allpairs", {})
    add("10x10 all-pairs in memory / 110 GEMMs", ap.get("in_memory_vs_ideal"), 0.6, "110 GEMMs")
    add("10x10 all-pairs from Zarr / in memory", ap.get("zarr_vs_in_memory"), 1.2, "in memory")
    peers = res.get("peers", {})
    for task in ("ckatorch", "torch-cka"):
        pr = peers.get(task, {})
        rows.append(
            (
                f"peer {task} (1 thread) / float64 floor",
                _fmt(pr.get("ratio_to_float64_floor")),
                "(reference)",
                "-",
                "three float64 GEMMs",
                str(pr.get("error", ""))[:40],
            )
        )
    w = [max(len(r[i]) for r in rows) for i in range(6)]
    print()
    for r in [("figure", "ratio", "target", "met", "floor", "note"), *rows]:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
