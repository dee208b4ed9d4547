"""Dask reductions equal the single-process measures; cluster failures give clear errors."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import zarr

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from repsim.errors import ConfigError, ShapeError  # noqa: E402
from repsim.fairness import group_metrics  # noqa: E402
from repsim.scale.dask import (  # noqa: E402
    ClusterError,
    compare_distributed,
    connect,
    distributed_cca,
    distributed_cka,
    distributed_group_metrics,
    reduce_rows,
)
from repsim.similarity import cka, pwcca, svcca  # noqa: E402


def _data(tmp_path, seed=0, n=1000, dx=16, dy=10):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, dx)) @ rng.standard_normal((dx, dx)) + 20.0).astype(np.float32)
    Y = np.tanh(X[:, :dy] / 5) + 0.2 * rng.standard_normal((n, dy)).astype(np.float32)
    zx = zarr.create_array(str(tmp_path / "x"), shape=X.shape, chunks=(128, dx), dtype="f4")
    zy = zarr.create_array(str(tmp_path / "y"), shape=Y.shape, chunks=(96, dy), dtype="f4")
    zx[:], zy[:] = X, Y
    return X, Y, zx, zy


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        yield client


@pytest.mark.parametrize("scheduler", [None, "sync"])
def test_local_schedulers_equal_single_process(tmp_path, scheduler):
    X, Y, zx, zy = _data(tmp_path)
    for debiased in (False, True):
        got = distributed_cka(zx, zy, debiased=debiased, scheduler=scheduler)
        assert got == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)
    assert distributed_cca(zx, zy, "svcca", scheduler=scheduler) == pytest.approx(
        svcca(X, Y), abs=1e-10
    )


def test_numpy_and_dask_array_inputs(tmp_path):
    import dask.array as da

    X, Y, zx, zy = _data(tmp_path, seed=6, n=700)
    ref = cka(X, Y)
    assert distributed_cka(X, Y, chunk_rows=64, n_tasks=5) == pytest.approx(ref, abs=1e-10)
    assert distributed_cka(da.from_zarr(zx), da.from_zarr(zy), chunk_rows=100) == pytest.approx(
        ref, abs=1e-10
    )
    with pytest.raises(ConfigError, match="n_tasks"):
        distributed_cka(X, Y, n_tasks=0)


def test_local_cluster_reproduces_cka_svcca_group_metrics(tmp_path, cluster):
    X, Y, zx, zy = _data(tmp_path, seed=1)
    assert len(cluster.scheduler_info()["workers"]) == 2
    for debiased in (False, True):
        got = distributed_cka(zx, zy, debiased=debiased, scheduler=cluster, chunk_rows=100)
        assert got == pytest.approx(cka(X, Y, debiased=debiased), abs=1e-10)
    ref = svcca(X, Y, return_details=True)
    got = distributed_cca(zx, zy, "svcca", scheduler=cluster, return_details=True)
    assert (got.kept_x, got.kept_y) == (ref.kept_x, ref.kept_y)
    np.testing.assert_allclose(got.correlations, ref.correlations, atol=1e-10)
    assert distributed_cca(zx, zy, "pwcca", scheduler=cluster) == pytest.approx(
        pwcca(X, Y), abs=1e-10
    )

    rng = np.random.default_rng(2)
    yt = rng.integers(0, 3, 1000)
    yp = np.where(rng.random(1000) < 0.7, yt, rng.integers(0, 3, 1000))
    g = rng.integers(0, 3, 1000)
    zs = []
    for name, v in (("t", yt), ("p", yp), ("g", g)):
        z = zarr.create_array(str(tmp_path / name), shape=v.shape, chunks=(128,), dtype="i8")
        z[:] = v
        zs.append(z)
    gm = distributed_group_metrics(*zs, scheduler=cluster, group_names=["u", "v", "w"])
    ref_gm = group_metrics(y_true=yt, y_pred=yp, groups=g, group_names=["u", "v", "w"])
    assert gm.by_group.rows == ref_gm.by_group.rows
    for key, v in ref_gm.aggregates.items():
        assert gm.aggregates[key] == pytest.approx(v, abs=1e-12, nan_ok=True)


def test_compare_distributed_table(tmp_path, cluster):
    X, Y, zx, zy = _data(tmp_path, seed=3)
    table = compare_distributed(
        {"l": zx},
        {"l": zy},
        measures=["cka", "cka_debiased", "svcca"],
        scheduler=cluster,
        model_a="dense",
        model_b="pruned",
    )
    values = {r["measure"]: r["value"] for r in table.rows}
    assert values["cka"] == pytest.approx(cka(X, Y), abs=1e-10)
    assert values["cka_debiased"] == pytest.approx(cka(X, Y, debiased=True), abs=1e-10)
    assert values["svcca"] == pytest.approx(svcca(X, Y), abs=1e-10)
    assert {r["n"] for r in table.rows} == {1000}
    with pytest.raises(ConfigError, match="no exact distributed"):
        compare_distributed({"l": zx}, {"l": zy}, measures=["cka_rbf"])
    with pytest.raises(ConfigError, match="not in capture"):
        compare_distributed({"l": zx}, {"l": zy}, layers=["m"])


def test_unreachable_address_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="no Dask scheduler answered at tcp://127.0.0.1:1"):
        connect("tcp://127.0.0.1:1", timeout=2)
    assert time.monotonic() - t0 < 20  # bounded by the timeout, never a hang
    X = np.zeros((10, 2))
    with pytest.raises(ClusterError):
        distributed_cka(X, X, scheduler="tcp://127.0.0.1:1", timeout=1)


def test_bad_scheduler_and_shapes():
    X = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(ConfigError, match="Did you mean 'threads'"):
        distributed_cka(X, X, scheduler="thread")
    with pytest.raises(ShapeError, match="rows"):
        distributed_cka(X, X[:-1])
    with pytest.raises(ConfigError, match="positive"):
        connect("tcp://127.0.0.1:1", timeout=0)


class _FlakyCounter:
    """An accumulator whose first update anywhere fails (once), to exercise retries."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.n = 0

    def update(self, x):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("transient failure")
        self.n += len(x)
        return self

    def merge(self, other):
        self.n += other.n
        return self


def test_failed_task_is_retried_and_store_untouched(tmp_path, cluster):
    X, _, zx, _ = _data(tmp_path, seed=4)
    before = {p: os.path.getmtime(p) for p in (tmp_path / "x").rglob("*")}
    marker = str(tmp_path / "failed-once")
    import functools

    make = functools.partial(_FlakyCounter, marker)
    acc = reduce_rows([zx], make, scheduler=cluster, retries=2)
    assert acc.n == len(X) and os.path.exists(marker)
    after = {p: os.path.getmtime(p) for p in (tmp_path / "x").rglob("*")}
    assert before == after
    os.remove(marker)
    with pytest.raises(RuntimeError, match="transient"):
        reduce_rows([zx], make, scheduler=cluster, retries=0)


class _Killer:
    """An accumulator that kills its worker process while a marker file is absent (creating
    it first), or on every call with ``always``: a worker lost mid-reduction."""

    def __init__(self, marker: str, always: bool = False) -> None:
        self.marker, self.always, self.n = marker, always, 0

    def update(self, x):
        if self.always or not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        self.n += len(x)
        return self

    def merge(self, other):
        self.n += other.n
        return self


@pytest.mark.slow  # starts worker processes and waits for restarts: ~20-60 s on 2 cores
def test_lost_worker_is_rerun_or_fails_clearly(tmp_path):
    import functools
    import sys

    import cloudpickle
    import dask

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    X = np.arange(600.0).reshape(300, 2)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        acc = reduce_rows(
            [X], functools.partial(_Killer, str(tmp_path / "m")), chunk_rows=100, scheduler=client
        )
        assert acc.n == 300  # the killed task was rerun on a live worker
        with pytest.raises(ClusterError, match="store is intact"):
            reduce_rows(
                [X],
                functools.partial(_Killer, str(tmp_path / "k"), True),
                chunk_rows=100,
                scheduler=client,
            )


def test_cli_scheduler_options(tmp_path):
    import argparse

    from repsim.cli.compare import add_scheduler_options, compare_with_args, scheduler_kwargs

    X, Y, zx, zy = _data(tmp_path, seed=5, n=300)
    parser = argparse.ArgumentParser()
    add_scheduler_options(parser)
    args = parser.parse_args(["--scheduler", "sync", "--chunk-rows", "64"])
    assert scheduler_kwargs(args) == {
        "scheduler": "sync",
        "timeout": 10.0,
        "retries": 2,
        "chunk_rows": 64,
    }
    table = compare_with_args(args, {"l": zx}, {"l": zy}, measures=["cka"])
    assert table.rows[0]["value"] == pytest.approx(cka(X, Y), abs=1e-10)
    args = parser.parse_args(["--scheduler", "tcp://127.0.0.1:1", "--timeout", "1"])
    with pytest.raises(ClusterError):
        compare_with_args(args, {"l": zx}, {"l": zy})
