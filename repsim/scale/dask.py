"""Dask: the streaming accumulators as a reduction over Zarr chunks (the ``repsim[dask]`` extra).

The rows are cut into contiguous ranges of whole Zarr chunks, one ``dask.delayed`` task per
range streams its rows (read straight from Zarr on the worker, ``chunk_rows`` at a time) into a
fresh accumulator, and the partial accumulators are merged in a tree (``split_every`` at a
time) with their exact ``merge``; the last, small step (``result()``: a few scalars for CKA, an
SVD of a ``d x d`` factor for the CCA family) runs locally. Because every accumulator's
``merge`` is exact, the value equals the single-process one to rounding (1e-10 or better),
whatever the number of workers or tasks.

Where it runs (``scheduler``):

* ``None`` or ``"threads"``: Dask's threaded scheduler in this process (the default);
* ``"sync"``: one thread, in order (debugging);
* ``"processes"``: Dask's local process pool;
* an address such as ``"tcp://10.0.0.5:8786"``: a running ``dask.distributed`` scheduler,
  connected within ``timeout`` seconds or a :class:`ClusterError`;
* a ``distributed.Client`` (e.g. of a ``LocalCluster``): used as is.

Failure handling: every task only *reads* the store, so a failure never alters it. On a cluster,
tasks of a lost worker are re-run elsewhere by Dask; a task that fails is retried ``retries``
times; a task that keeps killing workers (``KilledWorker``) or a scheduler that goes away gives a
:class:`ClusterError` naming the cause and what to do.
"""

from __future__ import annotations

import contextlib
import copy
import math
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from repsim._core.validation import check_consistent_length
from repsim.errors import ClusterError, ConfigError, ShapeError, did_you_mean

__all__ = [
    "ClusterError",
    "compare_distributed",
    "connect",
    "distributed_cca",
    "distributed_cka",
    "distributed_group_metrics",
    "reduce_rows",
]

LOCAL_SCHEDULERS = ("threads", "sync", "processes")
"""Scheduler names that need no cluster."""


def _require_dask() -> Any:
    try:
        import dask
        import dask.array  # noqa: F401
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ConfigError(
            "this needs Dask: install the extra with `pip install 'repsim-bias[dask]'`."
        ) from None
    return dask


def connect(address: str, *, timeout: float = 10.0) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``, or a clear error.

    Parameters
    ----------
    address : str
        Scheduler address, ``"tcp://host:port"`` (a bare ``"host:port"`` means TCP).
    timeout : float
        Seconds to wait for the scheduler to answer.

    Raises
    ------
    ClusterError
        If no scheduler answers at ``address`` within ``timeout`` seconds.
    ConfigError
        If ``address`` is not an address, or ``timeout`` is not positive.
    """
    _require_dask()
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        raise ConfigError(
            "a cluster address needs dask.distributed: `pip install 'repsim-bias[dask]'`."
        ) from None
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(
            f"scheduler {address!r} is neither a local scheduler ({', '.join(LOCAL_SCHEDULERS)})"
            " nor a cluster address like 'tcp://host:8786'."
        )
    if not timeout or timeout <= 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"no Dask scheduler answered at {address} within {timeout:g} s ({exc}). Check that "
            "the scheduler is running (`dask scheduler`), that the address and port are right "
            "and reachable from here, or pass a larger timeout."
        ) from None


def _check_scheduler(scheduler: Any) -> None:
    if scheduler is None or not isinstance(scheduler, str):
        return
    if scheduler in LOCAL_SCHEDULERS or ":" in scheduler:
        return
    hint = did_you_mean(scheduler, LOCAL_SCHEDULERS)
    raise ConfigError(
        f"unknown scheduler {scheduler!r}; use one of {', '.join(LOCAL_SCHEDULERS)} or a "
        f"cluster address like 'tcp://host:8786'.{hint}"
    )


@contextlib.contextmanager
def _cluster(scheduler: Any, timeout: float) -> Iterator[Any]:
    """The ``distributed.Client`` of a cluster scheduler (``None`` for a local one).

    An address is connected to (and the connection closed on exit); a ``Client`` is used as
    it is.
    """
    _check_scheduler(scheduler)
    if scheduler is None or (isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS):
        yield None
    elif isinstance(scheduler, str):
        client = connect(scheduler, timeout=timeout)
        try:
            yield client
        finally:
            client.close()
    else:
        yield scheduler


def _compute(obj: Any, scheduler: Any, client: Any, *, retries: int) -> Any:
    """Compute one Dask object locally or on ``client``, mapping cluster failures."""
    dask = _require_dask()
    if client is None:
        return dask.compute(obj, scheduler=scheduler or "threads")[0]
    from distributed import KilledWorker

    try:
        return client.compute(obj, retries=int(retries)).result()
    except KilledWorker as exc:
        raise ClusterError(
            f"workers died {exc.args[1] if len(exc.args) > 1 else 'repeatedly'} running task "
            f"{exc.args[0] if exc.args else '?'} and Dask gave up. The store is intact (the "
            "reduction only reads it). Usual cause: a worker out of memory; lower chunk_rows "
            "(a task holds chunk_rows x d float64 plus a d x d state) or give workers more "
            "memory, then rerun."
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"lost the connection to the Dask cluster during the reduction ({exc}). The store "
            "is intact (the reduction only reads it); rerun when the cluster is back."
        ) from None


def _default_rows(a: Any) -> int:
    chunks = getattr(a, "chunks", None)
    if chunks and isinstance(chunks[0], int | np.integer):
        return int(chunks[0])
    return 4096


def _is_dask(a: Any) -> bool:
    return type(a).__module__.startswith("dask")


def _in_memory(a: Any) -> bool:
    return isinstance(a, np.ndarray) or hasattr(a, "detach")


def _range_partial(
    make: Callable[[], Any],
    sources: Sequence[Any],
    offsets: Sequence[int],
    start: int,
    stop: int,
    batch: int,
) -> Any:
    """A fresh accumulator fed rows ``[start, stop)`` in batches of ``batch`` rows.

    ``sources[j]`` holds global row ``r`` at local row ``r - offsets[j]`` (a store array is
    passed whole with offset 0 and read batch by batch; an in-memory array is passed as its
    slice for this range).
    """
    acc = make()
    for i in range(start, stop, batch):
        j = min(i + batch, stop)
        blocks = []
        for src, off in zip(sources, offsets):
            blk = src[i - off : j - off]
            if hasattr(blk, "detach"):
                blk = blk.detach().cpu().numpy()
            blocks.append(np.asarray(blk))
        acc = acc.update(*blocks)
    return acc


def _merge(*accs: Any) -> Any:
    out = copy.deepcopy(accs[0])
    for a in accs[1:]:
        out.merge(a)
    return out


def reduce_rows(
    arrays: Sequence[Any],
    make: Callable[[], Any],
    *,
    chunk_rows: int | None = None,
    n_tasks: int | None = None,
    scheduler: Any = None,
    timeout: float = 10.0,
    retries: int = 2,
    split_every: int = 8,
) -> Any:
    """Run an accumulator over row-aligned arrays as a Dask reduction; return the merged one.

    The rows are cut into ``n_tasks`` contiguous ranges whose boundaries are multiples of
    ``chunk_rows`` (so with the default ``chunk_rows`` no two tasks read the same Zarr chunk).
    Each task streams its range ``chunk_rows`` rows at a time into one fresh accumulator, so a
    worker thread holds one batch and one ``d x d`` state whatever ``n`` is; the partial
    accumulators are then merged in a tree, ``split_every`` at a time.

    Why ranges rather than one task per Zarr chunk: a linear-CKA accumulator at ``d = 4096``
    is 0.3 GB; one per chunk in flight would multiply that by the number of chunks waiting to
    be merged, while one per range keeps it to about one per worker thread.

    Parameters
    ----------
    arrays : sequence of array-like
        ``zarr.Array`` (read lazily by each task; any object with ``.shape`` and row slicing
        works the same way), numpy arrays or CPU tensors (each task receives only its slice),
        or dask arrays (each task's block is materialised), all with the same number of rows.
    make : callable
        Returns a fresh accumulator with ``update(*row_blocks)`` (returning itself) and
        ``merge(other)``. Must be picklable for a cluster (a class, or ``functools.partial``).
    chunk_rows : int, optional
        Rows per batch inside a task, and the alignment of the ranges; default the largest Zarr
        row chunk among the arrays (a wide layer's chunk usually divides a narrow layer's), else
        4096.
    n_tasks : int, optional
        Number of row ranges; default twice the number of worker threads (the cluster's, or
        this machine's CPUs), at most one per ``chunk_rows`` rows.
    scheduler : None, str or distributed.Client
        See the module docstring.
    timeout : float
        Seconds to wait for a cluster address to answer.
    retries : int
        Times a failed task is retried on a cluster.
    split_every : int
        Partial accumulators merged per task in the reduction tree.

    Returns
    -------
    The accumulator holding all rows.
    """
    _require_dask()
    import os

    from dask import delayed

    _check_scheduler(scheduler)
    n = check_consistent_length(*arrays)
    if n == 0:
        raise ShapeError("the arrays hold no rows.")
    rows = int(chunk_rows or max(_default_rows(a) for a in arrays))
    if rows < 1:
        raise ConfigError(f"chunk_rows must be a positive number of rows, got {chunk_rows!r}.")
    if split_every < 2:
        raise ConfigError(f"split_every must be at least 2, got {split_every!r}.")
    if n_tasks is not None and n_tasks < 1:
        raise ConfigError(f"n_tasks must be a positive integer, got {n_tasks!r}.")
    with _cluster(scheduler, timeout) as client:
        if n_tasks is None:
            threads = sum(client.nthreads().values()) if client is not None else os.cpu_count() or 1
            n_tasks = 2 * max(1, threads)
        n_chunks = -(-n // rows)
        n_tasks = min(int(n_tasks), n_chunks)
        bounds = [min(n, (n_chunks * i // n_tasks) * rows) for i in range(n_tasks + 1)]
        bounds[-1] = n
        ranges = [(bounds[i], bounds[i + 1]) for i in range(n_tasks) if bounds[i] < bounds[i + 1]]
        tag = uuid.uuid4().hex  # unique keys: a shared cluster never serves another call's data
        dask_blocks = {
            j: a.rechunk({0: tuple(b - s for s, b in ranges)}).to_delayed().ravel()
            for j, a in enumerate(arrays)
            if _is_dask(a)
        }
        level = []
        for t, (start, stop) in enumerate(ranges):
            sources, offsets = [], []
            for j, a in enumerate(arrays):
                if j in dask_blocks:
                    sources.append(dask_blocks[j][t])
                    offsets.append(start)
                elif _in_memory(a):
                    sources.append(a[start:stop])
                    offsets.append(start)
                else:
                    sources.append(a)
                    offsets.append(0)
            level.append(
                delayed(_range_partial)(
                    make,
                    sources,
                    offsets,
                    start,
                    stop,
                    rows,
                    dask_key_name=f"repsim-partial-{tag}-{t}",
                )
            )
        depth = 0
        while len(level) > 1:
            level = [
                delayed(_merge)(
                    *level[i : i + split_every], dask_key_name=f"repsim-merge-{tag}-{depth}-{i}"
                )
                for i in range(0, len(level), split_every)
            ]
            depth += 1
        return _compute(level[0], scheduler if client is None else None, client, retries=retries)


def distributed_cka(
    X: Any,
    Y: Any,
    *,
    debiased: bool = False,
    chunk_rows: int | None = None,
    n_tasks: int | None = None,
    scheduler: Any = None,
    timeout: float = 10.0,
    retries: int = 2,
) -> float:
    """Exact linear CKA (Kornblith et al. 2019) of two row-aligned arrays, reduced on Dask.

    Each row block feeds a :class:`repsim.similarity.LinearCKAAccumulator`; blocks are merged
    exactly. Equal to ``repsim.similarity.cka(X[:], Y[:], debiased=debiased)`` to 1e-10.
    See :func:`reduce_rows` for the parameters.
    """
    from repsim.similarity import LinearCKAAccumulator

    acc = reduce_rows(
        [X, Y],
        LinearCKAAccumulator,
        chunk_rows=chunk_rows,
        n_tasks=n_tasks,
        scheduler=scheduler,
        timeout=timeout,
        retries=retries,
    )
    return acc.result(debiased=debiased)


def distributed_cca(
    X: Any,
    Y: Any,
    measure: str = "svcca",
    *,
    chunk_rows: int | None = None,
    n_tasks: int | None = None,
    scheduler: Any = None,
    timeout: float = 10.0,
    retries: int = 2,
    **options: Any,
) -> Any:
    """SVCCA, PWCCA, mean CCA or Procrustes distance of two row-aligned arrays, on Dask.

    The ``(d_x + d_y)^2`` triangular factor of the centered data is built by a distributed
    tall-skinny QR (:class:`repsim.similarity.outofcore.CCAAccumulator`); the small SVD/CCA step on it
    runs locally (:func:`repsim.similarity.outofcore.cca_from_accumulator`, which takes ``options``:
    ``keep``, ``rule``, ``n_components``, ``return_details``).
    """
    from repsim.similarity.outofcore import QR_MEASURES, CCAAccumulator, cca_from_accumulator

    if measure not in QR_MEASURES:
        raise ConfigError(
            f"measure must be one of {', '.join(QR_MEASURES)}, got {measure!r}."
            f"{did_you_mean(measure, QR_MEASURES)}"
        )
    acc = reduce_rows(
        [X, Y],
        CCAAccumulator,
        chunk_rows=chunk_rows,
        n_tasks=n_tasks,
        scheduler=scheduler,
        timeout=timeout,
        retries=retries,
    )
    return cca_from_accumulator(acc, measure, **options)


def distributed_group_metrics(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    chunk_rows: int | None = None,
    n_tasks: int | None = None,
    scheduler: Any = None,
    timeout: float = 10.0,
    retries: int = 2,
    **options: Any,
) -> Any:
    """Per-group metrics (:func:`repsim.fairness.group_metrics`) from confusion counts on Dask.

    ``y_true``, ``y_pred``, ``groups`` are 1-D (e.g. the store's ``labels``, ``predictions``,
    ``groups`` arrays). ``options``: ``group_names``, ``labels``, ``pos_label``,
    ``min_group_size``. See :func:`repsim.fairness.counts.group_metrics_from_counts`.
    """
    from repsim.fairness.counts import ConfusionCounter, group_metrics_from_counts

    counter = reduce_rows(
        [y_true, y_pred, groups],
        ConfusionCounter,
        chunk_rows=chunk_rows,
        n_tasks=n_tasks,
        scheduler=scheduler,
        timeout=timeout,
        retries=retries,
    )
    return group_metrics_from_counts(counter, **options)


def compare_distributed(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    layers: Sequence[str] | Mapping[str, str] | None = None,
    measures: Sequence[str] = ("cka",),
    scheduler: Any = None,
    timeout: float = 10.0,
    retries: int = 2,
    chunk_rows: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    model_a: str | None = None,
    model_b: str | None = None,
) -> Any:
    """:func:`repsim.similarity.compare` for same-named layer pairs, each cell reduced on Dask.

    Supports the measures with exact streaming accumulators: ``cka``, ``cka_debiased``
    (one reduction serves both), ``svcca``, ``pwcca``, ``mean_cca``, ``procrustes`` (one
    reduction serves all four). Sample order is checked as in ``compare`` when both captures
    carry ``sample_id``. One cluster connection serves every cell.

    Returns
    -------
    repsim.similarity.SimilarityTable
        Rows ``model_a, layer_a, model_b, layer_b, measure, value, n``.
    """
    from repsim.similarity import LinearCKAAccumulator, SimilarityTable, check_sample_order
    from repsim.similarity.outofcore import QR_MEASURES, cca_from_accumulator

    supported = ("cka", "cka_debiased", *QR_MEASURES)
    ms = [measures] if isinstance(measures, str) else list(measures)
    for m in ms:
        if m not in supported:
            raise ConfigError(
                f"measure {m!r} has no exact distributed reduction; use one of "
                f"{', '.join(supported)}, or repsim.similarity.compare in one process."
                f"{did_you_mean(m, supported)}"
            )
    if layers is None:
        pairs = [(la, la) for la in a if la in b]
    elif isinstance(layers, Mapping):
        pairs = list(layers.items())
    else:
        pairs = [(la, la) for la in ([layers] if isinstance(layers, str) else layers)]
    for la, lb in pairs:
        if la not in a:
            raise ConfigError(f"layer {la!r} is not in capture a.{did_you_mean(la, list(a))}")
        if lb not in b:
            raise ConfigError(f"layer {lb!r} is not in capture b.{did_you_mean(lb, list(b))}")
    ids_a, ids_b = getattr(a, "sample_id", None), getattr(b, "sample_id", None)
    if ids_a is not None and ids_b is not None:
        check_sample_order(ids_a, ids_b)
    options = dict(options or {})
    label_a = model_a or getattr(a, "name", None) or "a"
    label_b = model_b or getattr(b, "name", None) or "b"
    rows = []
    with _cluster(scheduler, timeout) as client:
        kw = dict(
            chunk_rows=chunk_rows,
            scheduler=scheduler if client is None else client,
            timeout=timeout,
            retries=retries,
        )
        for la, lb in pairs:
            X, Y = a[la], b[lb]
            lin = qr = None
            for m in ms:
                if m in ("cka", "cka_debiased"):
                    lin = lin or reduce_rows([X, Y], LinearCKAAccumulator, **kw)
                    value = lin.result(debiased=m == "cka_debiased")
                else:
                    from repsim.similarity.outofcore import CCAAccumulator

                    qr = qr or reduce_rows([X, Y], CCAAccumulator, **kw)
                    value = cca_from_accumulator(qr, m, **dict(options.get(m, {})))
                rows.append(
                    {
                        "model_a": label_a,
                        "layer_a": la,
                        "model_b": label_b,
                        "layer_b": lb,
                        "measure": m,
                        "value": float(value) if not math.isnan(value) else math.nan,
                        "n": int(X.shape[0]),
                    }
                )
    return SimilarityTable(rows)
