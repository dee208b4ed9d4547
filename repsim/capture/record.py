"""Record what chosen layers of a model compute on a dataset, batch by batch.

:func:`record` runs the model under ``torch.inference_mode()`` with forward hooks on the chosen
layers. Each hook detaches the layer's output, reduces it to ``[batch, n_features]`` and copies
it to CPU ``float32`` *inside the hook*, before the next module runs, so an in-place ReLU or an
``out += identity`` after the layer cannot change what was captured. Batches stream to an
:class:`~repsim.capture.store.ActivationStore` (written by a background thread, one full chunk at a time)
or, without a store, into memory. The result is a :class:`Capture`.

**Inputs.** A batch is one tensor (``model(x)``) or a dict of tensors (``model(**x)``, dict
inputs of a :class:`~repsim.data.GroupedData` or dict items of a torch ``Dataset``). Its
``attention_mask``, when the dict has one, travels with the batch: the token reductions
(``cls``, ``last``, ``mean_tokens``, ``tokens``; :mod:`repsim.capture.hooks`) leave padding out,
and the logits are read by the model's output rule (:func:`repsim.models.set_output_rule`).

**Token rows.** With ``reduction="tokens"`` every real token of every sample is one row: the
capture's layers are ``[n_tokens, d]`` and its ``sample_id``, ``labels``, ``groups``, ``logits``
and ``predictions`` are those of each token's sample, repeated; ``token_row`` (the sample's
position in the data) and ``token_position`` say which token a row is. In the store each
``<layer>@tokens`` array has a companion ``<layer>@token_index`` (``[n_tokens, 2]`` int64:
sample row, position). Two token captures of the same data line up row for row exactly when
their ``sample_id`` (and ``token_position``) agree, which :func:`repsim.similarity.compare`
checks; per-group similarity then uses each token's group.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from tqdm.auto import tqdm

from repsim._core.fingerprints import (
    DataHasher,
    array_fingerprint,
    model_fingerprint,
    unwrap_model,
)
from repsim._core.hooks import evaluating
from repsim.capture.hooks import _first_tensor, hooks
from repsim.capture.reductions import TOKEN_INDEX
from repsim.capture.store import META_ARRAYS, REDUCTIONS, ActivationStore, RowWriter, array_name
from repsim.data.adapt import _split_tuple
from repsim.data.base import GroupedData, pack_inputs
from repsim.errors import (
    CacheCorruptError,
    CacheError,
    ConfigError,
    DataError,
    ModelError,
    NonFiniteError,
    SampleOrderError,
    ShapeError,
)
from repsim.layers import LayerSpec, select_layers
from repsim.models.adapters import (
    Inputs,
    batch_len,
    call_model,
    extract_logits,
    inputs_to,
    output_rule,
    select_inputs,
)


class Capture(Mapping[str, Any]):
    """Activations of one model on one dataset: a mapping from layer name to a 2-D array.

    Each value is ``[n_samples, n_features]`` float32: a read-only ``zarr.Array`` when the
    capture went to an :class:`~repsim.capture.store.ActivationStore`, a ``numpy.ndarray`` otherwise.
    Rows follow ``sample_id``. A ``tokens`` capture has one row per real token instead
    (``[n_tokens, n_features]``), and its per-row attributes repeat each token's sample's.

    Attributes
    ----------
    sample_id : numpy.ndarray
        ``int64 [n]``, the data's order (positions ``0..n-1`` for a torch ``Dataset``).
    logits : numpy.ndarray
        ``float32 [n, C]`` model outputs.
    predictions : numpy.ndarray
        ``int64 [n]``: ``argmax`` of the logits (``logit > 0`` when ``C == 1``).
    labels, groups : numpy.ndarray
        ``int64 [n]`` true labels and group codes (all 0 when the data gives no groups).
    name : str
        Model label (default: the model's class name).
    model_fingerprint, data_fingerprint : str
        The cache key parts.
    reduction : str
        One of :data:`repsim.capture.REDUCTIONS`.
    token_row, token_position : numpy.ndarray or None
        For a ``tokens`` capture, ``int64 [n_tokens]``: each row's sample position in the
        data (``0..n-1``) and its token position; ``None`` otherwise.
    """

    def __init__(
        self,
        arrays: Mapping[str, Any],
        *,
        sample_id: np.ndarray,
        logits: np.ndarray,
        predictions: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
        name: str,
        model_fingerprint: str,
        data_fingerprint: str,
        reduction: str,
        store: ActivationStore | None = None,
        token_row: np.ndarray | None = None,
        token_position: np.ndarray | None = None,
    ) -> None:
        self._arrays = dict(arrays)
        self.token_row = token_row
        self.token_position = token_position
        self.sample_id = sample_id
        self.logits = logits
        self.predictions = predictions
        self.labels = labels
        self.groups = groups
        self.name = name
        self.model_fingerprint = model_fingerprint
        self.data_fingerprint = data_fingerprint
        self.reduction = reduction
        self.store = store

    def __getitem__(self, layer: str) -> Any:
        try:
            return self._arrays[layer]
        except KeyError:
            from repsim.errors import LayerNotFoundError, did_you_mean

            raise LayerNotFoundError(
                f"Capture {self.name!r} has no layer {layer!r}.{did_you_mean(layer, self._arrays)}"
                f" Captured layers: {list(self._arrays)}."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def n_samples(self) -> int:
        """Number of rows: samples, or tokens for a ``tokens`` capture."""
        return len(self.sample_id)

    def numpy(self, layer: str) -> np.ndarray:
        """The activations of ``layer`` as an in-memory ``numpy.ndarray``."""
        return np.asarray(self[layer][...])

    def _like(self, arrays: Mapping[str, np.ndarray], rows: Any, data_fingerprint: str) -> Capture:
        def meta(values: np.ndarray) -> np.ndarray:
            return np.asarray(values)[rows]

        tokens = self.token_row is not None and self.token_position is not None

        return Capture(
            arrays,
            sample_id=meta(self.sample_id),
            logits=meta(self.logits),
            predictions=meta(self.predictions),
            labels=meta(self.labels),
            groups=meta(self.groups),
            name=self.name,
            model_fingerprint=self.model_fingerprint,
            data_fingerprint=data_fingerprint,
            reduction=self.reduction,
            token_row=meta(self.token_row) if tokens else None,
            token_position=meta(self.token_position) if tokens else None,
        )

    def load(self) -> Capture:
        """A copy of the capture in memory: every layer read into a ``numpy.ndarray``.

        A capture backed by an :class:`~repsim.capture.store.ActivationStore` reads each layer
        once; the result holds no reference to the store (``store`` is ``None``), so repeated
        reads (e.g. a layer compared with several others) cost no decompression. The metadata
        (sample ids, logits, predictions, labels, groups, name, fingerprints, reduction) is
        the same.

        Returns
        -------
        Capture
            The in-memory copy (arrays that were already in memory are shared, not copied).
        """
        arrays = {layer: np.asarray(self[layer][...]) for layer in self}
        return self._like(arrays, slice(None), self.data_fingerprint)

    def subset(self, rows: Any) -> Capture:
        """The capture restricted to some samples, in memory.

        Parameters
        ----------
        rows : array-like of int, or of bool
            Row positions (``0 <= r < n_samples``, in the order wanted, repeats allowed), or a
            boolean mask of length ``n_samples``.

        Returns
        -------
        Capture
            Every layer, ``sample_id``, ``logits``, ``predictions``, ``labels`` and ``groups``
            taken at ``rows``. The model fingerprint is kept; ``data_fingerprint`` is derived
            from this capture's and ``rows`` (the subset is other data, so it never shares a
            cache key with the whole).

        Raises
        ------
        DataError
            If ``rows`` is not a 1-D set of integer positions in range or a mask of the right
            length.
        """
        idx = np.asarray(rows)
        n = self.n_samples
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise DataError(
                    f"a boolean row mask must have length n_samples = {n}, got shape {idx.shape}."
                )
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.intp)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DataError(
                f"rows must be a 1-D array of integer positions or a boolean mask, got "
                f"{idx.dtype} of shape {idx.shape}."
            )
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DataError(
                f"rows must lie in [0, {n}) (positions, not sample ids); got "
                f"{int(idx.min())} to {int(idx.max())}."
            )
        arrays = {}
        for layer in self:
            arr = self[layer]
            oindex = getattr(arr, "oindex", None)
            arrays[layer] = np.asarray(oindex[idx]) if oindex is not None else np.asarray(arr)[idx]
        fingerprint = array_fingerprint(
            np.frombuffer(self.data_fingerprint.encode(), dtype=np.uint8), idx.astype(np.int64)
        )
        return self._like(arrays, idx, fingerprint)

    def __repr__(self) -> str:
        where = "memory" if self.store is None else str(self.store.path)
        return (
            f"Capture(name={self.name!r}, n={self.n_samples}, reduction={self.reduction!r}, "
            f"layers={len(self)}, model={self.model_fingerprint}, data={self.data_fingerprint}, "
            f"in={where})"
        )


# ---------------------------------------------------------------------------- data


@dataclass
class _Source:
    n: int
    sample_id: np.ndarray
    batches: Any  # callable -> iterator of (x, y, group-or-None); x a tensor or dict of tensors
    fingerprint: str | None  # None: compute from the inputs
    _tokens: Any = None  # cached count of real tokens (see real_tokens)

    def real_tokens(self) -> int | None:
        """Number of positions with ``attention_mask != 0`` over all samples.

        One pass over the data for a torch Dataset; ``None`` when the inputs carry no
        attention mask.
        """
        if self._tokens is None:
            total: int | None = None
            for x, _, _ in self.batches():
                mask = _mask_of(x)
                if mask is not None:
                    total = (total or 0) + int((mask != 0).sum())
            self._tokens = (total,)
        return self._tokens[0]


def _mask_of(x: Inputs) -> torch.Tensor | None:
    """The batch's ``attention_mask`` (dict inputs that have one), else ``None``."""
    if isinstance(x, Mapping):
        mask = x.get("attention_mask")
        return mask if isinstance(mask, torch.Tensor) else None
    return None


def _as_inputs(x: Any) -> Inputs:
    if isinstance(x, Mapping):
        return {str(k): torch.as_tensor(v) for k, v in x.items()}
    return torch.as_tensor(x)


def _split_item(item: Any) -> tuple[Inputs, torch.Tensor, torch.Tensor | None]:
    """``(x, y, group)`` of one batch of a DataLoader: a tuple, or a dict (``as_grouped``'s keys)."""
    if not isinstance(item, Mapping) and not (
        isinstance(item, list | tuple) and len(item) in (2, 3)
    ):
        raise DataError(
            "Each batch must be a tuple (x, y) or (x, y, group), or a dict with 'label' and "
            f"'group' keys; got {type(item).__name__}"
            f"{'' if not hasattr(item, '__len__') else f' of length {len(item)}'}."
            " Wrap the dataset so it yields such items."
        )
    x, y, g, _ = _split_tuple(item, "each batch of the data")
    return _as_inputs(x), torch.as_tensor(y), None if g is None else torch.as_tensor(g)


def _source(data: Any, batch_size: int) -> _Source:
    if isinstance(data, GroupedData):
        x, y, g = data.tensors()

        def gd_batches() -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor]]:
            for start in range(0, len(data), batch_size):
                rows = slice(start, min(start + batch_size, len(data)))
                yield select_inputs(x, rows), y[rows], g[rows]

        src = _Source(
            len(data), np.asarray(data.sample_id, dtype=np.int64), gd_batches, data.fingerprint()
        )
        mask = x.get("attention_mask") if isinstance(x, dict) else None
        src._tokens = (None if mask is None else int((mask != 0).sum()),)
        return src
    if isinstance(data, DataLoader):
        loader = data
        sampler = getattr(loader.batch_sampler, "sampler", loader.sampler)
        if not isinstance(sampler, SequentialSampler):
            raise SampleOrderError(
                "The DataLoader does not iterate its dataset in order (shuffle=True or a custom "
                "sampler); sample ids would not match rows. Pass a DataLoader with "
                "shuffle=False, or the Dataset itself."
            )
    elif isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    else:
        raise DataError(
            f"Cannot capture on a {type(data).__name__}; pass a GroupedData, a torch Dataset "
            "yielding (x, y) or (x, y, group) tuples (x a tensor or a dict of tensors) or dicts "
            "with 'label' and 'group' keys, or a DataLoader over one."
        )
    try:
        n = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            "The dataset has no length (an IterableDataset?); capture needs to know the number "
            "of samples. Use a map-style Dataset or a GroupedData."
        ) from None

    def loader_batches() -> Iterator[tuple[Inputs, torch.Tensor, torch.Tensor | None]]:
        for item in loader:
            yield _split_item(item)

    return _Source(n, np.arange(n, dtype=np.int64), loader_batches, None)


#: Batches of a dataset without a cheap identity are kept in memory while they are hashed, up to
#: this many bytes, so the forward pass that follows a cache miss replays them instead of
#: reading the data a second time.
REPLAY_BYTES = 1 << 30


def _nbytes(x: Inputs) -> int:
    if isinstance(x, Mapping):
        return sum(int(v.numel() * v.element_size()) for v in x.values())
    return int(x.numel() * x.element_size())


def fingerprint_source(src: _Source, limit: int | None = None) -> str:
    """The data fingerprint of ``src``, read once; ``src`` then replays what was read.

    A source with a cheap stable identity (a ``GroupedData``: ``data.fingerprint()``) is not
    read at all. Otherwise one pass hashes the batches (:class:`DataHasher`, as
    :func:`data_fingerprint`) and keeps them in memory, up to ``limit`` bytes of inputs, so that
    the forward pass of a cache miss feeds from them: the dataset is read once. Past the
    limit (default :data:`REPLAY_BYTES`), the batches are dropped and a forward pass reads the
    data again.
    """
    if src.fingerprint is not None:
        return src.fingerprint
    limit = REPLAY_BYTES if limit is None else limit
    h = DataHasher(src.sample_id)
    kept: list[Any] | None = []
    size = 0
    for x, y, g in src.batches():
        h.update(_hashable(x), y, g)
        if kept is not None:
            size += _nbytes(x)
            if size <= limit:
                kept.append((x, y, g))
            else:
                kept = None
    src.fingerprint = h.hexdigest()
    if kept is not None:
        batches = kept
        src.batches = lambda: iter(batches)
    return src.fingerprint


def data_fingerprint(data: Any, batch_size: int = 256) -> str:
    """Fingerprint of what a capture would see, in order, as the cache keys use.

    It covers the sample ids, the inputs, the labels and the group labels
    (:class:`repsim._core.fingerprints.DataHasher`). For a ``GroupedData`` this is
    ``data.fingerprint()``; for a torch ``Dataset`` or ``DataLoader`` the same hash of
    ``(sample_id = 0..n-1, x, y, group)`` (groups all 0 when the items have none), computed by
    one pass.
    """
    return fingerprint_source(_source(data, batch_size), limit=0)  # nothing kept to replay


def _hashable(x: Inputs) -> Any:
    """Inputs as the data fingerprint hashes them (dict inputs: one structured array)."""
    if isinstance(x, Mapping):
        return pack_inputs(x, "the batch's inputs")
    return x


# ---------------------------------------------------------------------------- sinks
#
# A sink takes each batch of the forward loop as ``write(start, batch)``: ``start`` is the
# batch's first row in the data's order, ``batch`` maps array name -> rows. The loop is the
# same whatever the sink; only where the rows go differs.


class _MemorySink:
    """Keep every batch in memory; :meth:`result` concatenates them."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def write(self, start: int, batch: dict[str, np.ndarray]) -> None:
        for k, v in batch.items():
            self.parts.setdefault(k, []).append(v)

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


class _StoreSink:
    """Stream batches to a PendingEntry from a background thread (bounded queue)."""

    def __init__(self, pending: Any, attrs: dict[str, dict[str, Any]], depth: int = 4) -> None:
        self.pending = pending
        self.attrs = attrs
        self.rows: dict[str, int] = {}  # row counts of token-row arrays (set by forward_rows)
        self.writers: dict[str, Any] = {}
        self.queue: queue.Queue[dict[str, np.ndarray] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="repsim-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                for k, v in item.items():
                    self.writers[k].append(v)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, start: int, batch: dict[str, np.ndarray]) -> None:
        self._check()
        for k, v in batch.items():
            if k not in self.writers:
                arr = self.pending.create_array(
                    k,
                    None if v.ndim == 1 else v.shape[1],
                    v.dtype,
                    self.attrs.get(k, {}),
                    n_rows=self.rows.get(k),
                )
                self.writers[k] = RowWriter(arr)
        while True:
            try:
                self.queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    self._check()
                    raise RuntimeError("repsim writer thread ended unexpectedly") from None

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._check()
        for k, w in self.writers.items():
            w.flush()
            self.pending.finish(k)

    def stop(self) -> None:
        """Stop the thread without finishing (error path)."""
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
        self.thread.join(timeout=30)


def array_attrs(
    pairs: Sequence[tuple[str, str]], label: str, seed: int, meta: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The attributes stored with each array of an entry.

    The attributes stored with each array of an entry: layer arrays name their layer,
    reduction, seed and model (a ``tokens`` array's ``token_index`` companion too); the
    ``meta`` arrays carry the seed.
    """
    attrs: dict[str, dict[str, Any]] = {}
    for layer, reduction in pairs:
        for red in (reduction, TOKEN_INDEX) if reduction == "tokens" else (reduction,):
            attrs[array_name(layer, red)] = {
                "layer": layer,
                "reduction": red,
                "seed": seed,
                "model": label,
            }
    attrs.update({k: {"seed": seed} for k in meta})
    return attrs


# ---------------------------------------------------------------------------- record


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device of a forward pass: ``device``, else CUDA when available, else CPU.

    Raises
    ------
    ConfigError
        If ``device`` is not a device name, or names a CUDA (or MPS) device this machine does
        not have.
    """
    if device is None:
        return _default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or 'mps'."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={str(device)!r} but CUDA is not available on this machine; pass "
                "device='cpu' (or leave device unset to use CUDA only where there is one)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s); choose an index below that."
            )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"device={str(device)!r} but MPS is not available on this machine.")
    return dev


def _logits_of(
    output: Any, model: nn.Module, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``[N, C]`` CPU float32 logits of a model output, by the model's output rule.

    :func:`repsim.models.adapters.extract_logits` with :func:`~repsim.models.output_rule`
    (a 1-D output is one column).
    """
    rule = output_rule(model)
    try:
        t = extract_logits(output, rule, attention_mask=attention_mask)
    except ModelError as exc:
        z = _first_tensor(output) if rule.logits is None else None
        if z is None or z.ndim != 1:
            raise ShapeError(f"capture needs [N, C] logits from the model: {exc}") from None
        t = z.reshape(-1, 1)
    return t.detach().to(device="cpu", dtype=torch.float32, copy=True)


def record(
    model: nn.Module,
    data: GroupedData | Dataset | DataLoader,
    layers: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    reduction: str = "flatten",
    store: ActivationStore | str | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    name: str | None = None,
    progress: bool | None = None,
) -> Capture:
    """Record the activations of ``layers`` of ``model`` on every sample of ``data``.

    Parameters
    ----------
    model : torch.nn.Module
        The model (``DataParallel``/DDP wrappers are unwrapped). It runs in eval mode under
        ``torch.inference_mode()``; its train/eval flags and device are restored afterwards.
    data : GroupedData, torch Dataset or DataLoader
        A Dataset must yield ``(x, y)`` or ``(x, y, group)`` (``x`` a tensor or a dict of
        tensors), or dicts with ``label`` and ``group`` keys (the rest are inputs); a
        DataLoader must not shuffle. Sample ids are ``data.sample_id`` for GroupedData,
        positions ``0..n-1`` otherwise. Dict inputs are passed as keyword arguments.
    layers : selector(s) or None
        See :func:`repsim.layers.select_layers`; ``None`` records every leaf module.
    reduction : {"flatten", "mean", "max", "cls", "last", "mean_tokens", "tokens"}
        How each activation becomes ``[N, n_features]``: ``flatten``/``mean``/``max`` for
        channel-first maps ``[N, C, ...]``, ``cls``/``last``/``mean_tokens`` for token
        sequences ``[N, T, D]`` (padding left out by the batch's ``attention_mask``), and
        ``tokens`` for one row per real token (see the module docstring); definitions in
        :mod:`repsim.capture.hooks`. Tuple outputs contribute their first tensor.
    store : ActivationStore, path or None
        Where to write. Layers already complete in the store are served from it without a
        forward pass; the others are captured and published atomically. ``None`` keeps
        everything in memory.
    batch_size : int
        Samples per forward pass (ignored for a DataLoader, which batches itself).
    device : str, torch.device or None
        Device of the forward pass; default CUDA when available, else CPU.
    seed : int
        Seeds torch's RNG (in a forked RNG state) for models with random layers; recorded.
    name : str or None
        Model label; default the model's class name.
    progress : bool or None
        Show a tqdm bar; ``None`` shows it only on a terminal.

    Returns
    -------
    Capture
        Layer name -> ``[n_samples, n_features]`` float32 array (``[n_tokens, n_features]``
        for ``tokens``), plus logits, predictions, labels, groups and sample ids.

    Raises
    ------
    NonFiniteError
        If a layer (or the logits) holds NaN or inf; the message names the layer and the batch.
        Nothing is written to the store for that capture.
    ShapeError
        If a layer's feature count changes between batches, its output is not batch-first,
        a 3-D output gets ``mean``/``max`` (see :mod:`repsim.capture.hooks`), a token
        reduction meets an output that is not ``[N, T, D]``, or the logits are not ``[N, C]``
        by the model's output rule.
    LayerNotFoundError, ConfigError, DataError, SampleOrderError, CacheError
        For bad layers, options, data or cache paths.
    """
    return record_reductions(
        model,
        data,
        {reduction: layers},
        store=store,
        batch_size=batch_size,
        device=device,
        seed=seed,
        name=name,
        progress=progress,
    )[reduction]


def record_reductions(
    model: nn.Module,
    data: GroupedData | Dataset | DataLoader,
    layers_by_reduction: Mapping[str, LayerSpec | Sequence[LayerSpec] | None],
    *,
    store: ActivationStore | str | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    name: str | None = None,
    progress: bool | None = None,
) -> dict[str, Capture]:
    """Record several reductions in one forward pass: one :class:`Capture` per reduction.

    ``record_reductions(model, data, {"mean": "layer*.*", "flatten": "layer3.*"})`` gives
    ``{"mean": Capture, "flatten": Capture}`` from a single pass over the data; a layer may
    appear under several reductions. Other parameters and errors are those of :func:`record`.
    """
    if not layers_by_reduction:
        raise ConfigError("layers_by_reduction is empty; give at least one reduction.")
    for reduction in layers_by_reduction:
        if reduction not in REDUCTIONS:
            raise ConfigError(f"Unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    resolve_device(device)
    model = unwrap_model(model)
    names = {red: select_layers(model, spec) for red, spec in layers_by_reduction.items()}
    pairs = [(layer, red) for red, layers in names.items() for layer in layers]
    label = name or type(model).__name__
    if store is not None and not isinstance(store, ActivationStore):
        store = ActivationStore(store)
    src = _source(data, batch_size)
    if src.n == 0:
        raise DataError("The data holds no samples.")
    m_fp = model_fingerprint(model, strict=store is not None)
    d_fp = src.fingerprint
    if store is not None and d_fp is None:
        d_fp = fingerprint_source(src)  # one read: a miss's forward pass replays it

    if store is not None:
        assert d_fp is not None
        wanted = {array_name(layer, red): (layer, red) for layer, red in pairs}
        index = {
            array_name(layer, TOKEN_INDEX): (layer, red) for layer, red in pairs if red == "tokens"
        }
        for attempt in range(2):
            # every chunk of what is served is checked first; damaged arrays are recaptured
            missing = set(
                store.missing(m_fp, d_fp, [*wanted, *index, *META_ARRAYS], src.n, deep=True)
            )
            todo = list(
                dict.fromkeys(pair for a, pair in {**wanted, **index}.items() if a in missing)
            )
            need_meta = bool(missing & set(META_ARRAYS))
            if todo or need_meta:
                _run(
                    model,
                    src,
                    todo,
                    store,
                    m_fp,
                    d_fp,
                    label,
                    seed,
                    device,
                    progress,
                    meta=need_meta,
                )
            try:
                out: dict[str, Any] = {a: store.open(m_fp, d_fp, a) for a in wanted}
                out.update({a: np.asarray(store.open(m_fp, d_fp, a)[...]) for a in index})
                out.update({k: np.asarray(store.open(m_fp, d_fp, k)[...]) for k in META_ARRAYS})
                break
            except CacheCorruptError:
                if attempt:  # damaged again right after a recapture: report it
                    raise
    else:
        out, d_fp_mem = _run(
            model, src, pairs, None, m_fp, d_fp, label, seed, device, progress, meta=True
        )
        d_fp = d_fp or d_fp_mem
    return {
        red: _capture(out, layers, red, label, m_fp, d_fp, store) for red, layers in names.items()
    }


def combine_reductions(captures: Mapping[str, Capture]) -> Capture:
    """One capture holding several reductions of the same pass: layers ``"<layer>@<reduction>"``.

    ``record_reductions(model, data, {"cls": layers, "mean_tokens": layers})`` gives one
    capture per reduction; this joins them so a comparison sees ``"h.0@cls"`` and
    ``"h.0@mean_tokens"`` as two layers. Its ``reduction`` is the reductions joined by ``+``
    (part of similarity cache keys).

    Raises
    ------
    ShapeError
        Captures of different models, data or rows (a ``tokens`` capture among per-sample ones).
    """
    caps = list(captures.items())
    if not caps:
        raise ConfigError("combine_reductions needs at least one capture.")
    red0, first = caps[0]
    arrays: dict[str, Any] = {}
    for red, cap in caps:
        same = (
            cap.model_fingerprint == first.model_fingerprint
            and cap.data_fingerprint == first.data_fingerprint
            and np.array_equal(cap.sample_id, first.sample_id)
        )
        if not same:
            raise ShapeError(
                f"Captures {red0!r} and {red!r} are of different models, data or rows; only "
                "reductions of one model on one dataset (one row per sample) combine."
            )
        arrays.update({f"{layer}@{red}": cap[layer] for layer in cap})
    return Capture(
        arrays,
        sample_id=first.sample_id,
        logits=first.logits,
        predictions=first.predictions,
        labels=first.labels,
        groups=first.groups,
        name=first.name,
        model_fingerprint=first.model_fingerprint,
        data_fingerprint=first.data_fingerprint,
        reduction="+".join(red for red, _ in caps),
        store=first.store,
        token_row=first.token_row,
        token_position=first.token_position,
    )


def _capture(
    out: Mapping[str, Any],
    layers: Sequence[str],
    reduction: str,
    label: str,
    m_fp: str,
    d_fp: str,
    store: ActivationStore | None,
) -> Capture:
    """The :class:`Capture` of one reduction from the arrays of a pass (or of the store).

    For ``tokens``, the per-sample arrays are repeated for each token, and every layer must
    have the same token rows (checked against the first layer's ``token_index``).
    """
    arrays = {layer: out[array_name(layer, reduction)] for layer in layers}
    rows: Any = slice(None)
    token_row = token_position = None
    if reduction == "tokens" and layers:
        first = np.asarray(out[array_name(layers[0], TOKEN_INDEX)])
        for layer in layers[1:]:
            other = np.asarray(out[array_name(layer, TOKEN_INDEX)])
            if not np.array_equal(other, first):
                raise ShapeError(
                    f"Layers {layers[0]!r} and {layer!r} have different token rows (e.g. "
                    "token axes of different lengths without an attention_mask); a 'tokens' "
                    "capture needs the same tokens in every layer. Record them separately."
                )
        rows = token_row = np.ascontiguousarray(first[:, 0])
        token_position = np.ascontiguousarray(first[:, 1])
    return Capture(
        arrays,
        sample_id=np.asarray(out["sample_id"])[rows],
        logits=np.asarray(out["logits"])[rows],
        predictions=np.asarray(out["predictions"])[rows],
        labels=np.asarray(out["labels"])[rows],
        groups=np.asarray(out["groups"])[rows],
        name=label,
        model_fingerprint=m_fp,
        data_fingerprint=d_fp,
        reduction=reduction,
        store=store,
        token_row=token_row,
        token_position=token_position,
    )


def _run(
    model: nn.Module,
    src: _Source,
    pairs: list[tuple[str, str]],
    store: ActivationStore | None,
    m_fp: str,
    d_fp: str | None,
    label: str,
    seed: int,
    device: str | torch.device | None,
    progress: bool | None,
    *,
    meta: bool,
) -> tuple[dict[str, np.ndarray], str]:
    """One pass over all the data; returns in-memory arrays (empty for a store).

    With a store the rows stream into a pending entry that is published when the pass is
    complete and discarded on any error.
    """
    loop = {"seed": seed, "device": device, "progress": progress, "desc": f"capture {label}"}
    if store is None:
        hasher = DataHasher(src.sample_id) if d_fp is None else None
        memory = _MemorySink()
        forward_rows(model, src, pairs, memory, meta=meta, hasher=hasher, **loop)
        return memory.result(), hasher.hexdigest() if hasher is not None else (d_fp or "")
    pending = store.begin(
        m_fp,
        d_fp,
        src.n,
        {
            "name": label,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "seed": seed,
        },
    )
    sink: _StoreSink | None = None
    try:
        sink = _StoreSink(pending, array_attrs(pairs, label, seed, ("logits",)))
        forward_rows(model, src, pairs, sink, meta=meta, **loop)
        sink.close()
        pending.commit()
    except OSError as exc:  # a read-only or full disk under the writer
        if sink is not None:
            sink.stop()
        pending.abort()
        reason = exc.strerror or str(exc)
        raise CacheError(
            f"cannot write the capture of {label} into the cache {store.path}: {reason}. "
            "Free some space or choose a writable cache path; nothing was published."
        ) from None
    except BaseException:
        if sink is not None:
            sink.stop()
        pending.abort()
        raise
    return {}, d_fp or ""


def forward_rows(
    model: nn.Module,
    src: _Source,
    pairs: Sequence[tuple[str, str]],
    sink: Any,
    *,
    rows: tuple[int, int] | None = None,
    meta: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    desc: str = "capture",
    hasher: DataHasher | None = None,
) -> None:
    """Run the one forward loop of capture over rows of ``src``.

    The one forward loop of capture: run ``model`` on rows of ``src`` and hand each batch
    of activations to ``sink.write(start, batch)``.

    The model runs in eval mode on ``device`` under ``torch.inference_mode()``, in a forked
    torch RNG seeded with ``seed``; the hooks of :func:`repsim.capture.hooks.hooks` copy each
    layer's output inside the forward pass. Hooks, train/eval flags and the model's device are
    restored however the loop ends.

    Parameters
    ----------
    rows : (int, int), optional
        Only the samples ``[a, b)`` (a shard): batches outside are skipped, batches straddling
        a bound are cut, and the loop stops after ``b``. Default: every sample, and the number
        of samples the data yields is checked against its length.
    meta : bool
        Also write ``logits``, ``predictions``, ``labels``, ``groups`` and ``sample_id``.
    hasher : DataHasher, optional
        Fed every batch of inputs, labels and groups (the streaming data fingerprint).

    Raises
    ------
    ShapeError, NonFiniteError, DataError
        As :func:`record`; the sink has then been given only the batches before the bad one.
    """
    dev = resolve_device(device)
    a, b = (0, src.n) if rows is None else rows
    checks = _BatchChecks()
    bar = {"total": b - a, "desc": desc, "disable": None if progress is None else not progress}
    row = 0
    with evaluating(model, dev), hooks(model, pairs) as recorder:
        with (
            tqdm(unit="sample", leave=False, **bar) as progress_bar,
            torch.random.fork_rng(devices=[]),
            torch.inference_mode(),
        ):
            torch.manual_seed(seed)
            for i, (x, y, g) in enumerate(src.batches()):
                if hasher is not None:
                    hasher.update(_hashable(x), y, g)
                start, row = row, row + batch_len(x)
                lo, hi = max(a, start), min(b, row)
                if hi > lo:
                    if (lo, hi) != (start, row):
                        cut = slice(lo - start, hi - start)
                        x, y, g = select_inputs(x, cut), y[cut], None if g is None else g[cut]
                    x = inputs_to(x, dev)
                    mask = _mask_of(x)
                    recorder.reset(attention_mask=mask)
                    logits = _logits_of(call_model(model, x), model, mask)
                    batch = checks.at(i, lo, hi).layers(recorder, pairs)
                    rows_of = getattr(sink, "rows", None)
                    if rows_of is not None:
                        rows_of.update(checks.token_totals(src, recorder))
                    if meta:
                        batch.update(checks.meta(logits, y, g, src.sample_id))
                    sink.write(lo, batch)
                    progress_bar.update(hi - lo)
                if rows is not None and row >= b:
                    break
    if rows is None and row != src.n:
        raise DataError(f"The data yielded {row} samples but reports {src.n}.")


class _BatchChecks:
    """The checks every batch passes: layers ran, batch-first, constant width, finite values.

    Remembers each array's feature shape across batches; :meth:`at` names the batch (its
    index ``b`` and samples ``lo..hi-1``) for the messages.
    """

    def __init__(self) -> None:
        self.feats: dict[str, tuple[int, ...]] = {}
        self.b = self.lo = self.hi = 0
        self.token_len: int | None = None  # T of the token layers (without a mask)
        self.totals: dict[str, int] = {}

    def at(self, b: int, lo: int, hi: int) -> _BatchChecks:
        self.b, self.lo, self.hi = b, lo, hi
        return self

    def layers(self, recorder: Any, pairs: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
        """The checked activations of the batch, by array name."""
        b, lo, hi, k = self.b, self.lo, self.hi, self.hi - self.lo
        batch: dict[str, np.ndarray] = {}
        for layer, reduction in pairs:
            if (layer, reduction) not in recorder.out:
                raise ShapeError(
                    f"Layer {layer!r} did not run in batch {b}; it is not part of the "
                    "model's forward pass. Choose layers that run."
                )
            act = recorder.out[layer, reduction]
            if reduction == "tokens":
                index = recorder.token_index[layer].numpy().copy()
                index[:, 0] += lo
                batch[array_name(layer, TOKEN_INDEX)] = index
                self._token_layout(layer, recorder)
            elif act.shape[0] != k:
                raise ShapeError(
                    f"Layer {layer!r} output has leading size {act.shape[0]} in batch {b}"
                    f" but the batch has {k} samples; capture needs batch-first outputs."
                )
            shape = tuple(act.shape[1:])
            key = f"{layer}@{reduction}"
            if self.feats.setdefault(key, shape) != shape:
                raise ShapeError(
                    f"Layer {layer!r} changed its output from {self.feats[key][0]} features "
                    f"to {shape[0]} in batch {b} (samples {lo}-{hi - 1}); the model"
                    " must give every sample the same shape."
                )
            arr = act.numpy()
            if not np.isfinite(arr).all():
                raise NonFiniteError(
                    f"Layer {layer!r} produced NaN or inf in batch {b} (samples "
                    f"{lo}-{hi - 1}). Fix the model or its inputs; nothing was "
                    "cached for this capture."
                )
            batch[array_name(layer, reduction)] = arr
        return batch

    def _token_layout(self, layer: str, recorder: Any) -> None:
        """Token layers without a mask must share one constant token length ``T``."""
        if recorder.attention_mask is not None:
            return
        length = recorder.token_len[layer]
        if self.token_len is None:
            self.token_len = length
        elif length != self.token_len:
            raise ShapeError(
                f"Layer {layer!r} has {length} tokens in batch {self.b} where the other "
                f"'tokens' layers (or earlier batches) have {self.token_len}, and the inputs "
                "carry no attention_mask: the rows of a 'tokens' capture must be the same "
                "tokens in every layer. Capture such layers with separate record() calls, or "
                "pass dict inputs with an attention_mask."
            )

    def token_totals(self, src: _Source, recorder: Any) -> dict[str, int]:
        """Rows of each ``tokens`` array over all the data (and of its index), once known.

        With an attention mask: the number of real tokens of the data; without: ``n * T``.
        """
        for layer, length in recorder.token_len.items():
            total = self.totals.get(array_name(layer, "tokens"))
            if total is not None:
                continue
            if recorder.attention_mask is not None:
                total = src.real_tokens()
                if total is None:  # pragma: no cover - a mask in the batch means one in data
                    raise DataError("The data's batches carry an attention_mask only sometimes.")
            else:
                total = src.n * length
            self.totals[array_name(layer, "tokens")] = total
            self.totals[array_name(layer, TOKEN_INDEX)] = total
        return self.totals

    def meta(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        g: torch.Tensor | None,
        sample_id: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Checked logits, predictions, labels, groups and sample ids of the batch."""
        b, lo, hi, k = self.b, self.lo, self.hi, self.hi - self.lo
        lg = logits.numpy()
        if logits.shape[0] != k:
            raise ShapeError(
                f"The model returned {logits.shape[0]} rows for a batch of {k} samples (batch {b})."
            )
        if self.feats.setdefault(":logits", tuple(lg.shape[1:])) != lg.shape[1:]:
            raise ShapeError(
                f"The model's output changed from {self.feats[':logits']} "
                f"to {lg.shape[1:]} classes in batch {b}."
            )
        if not np.isfinite(lg).all():
            raise NonFiniteError(
                f"The model's logits hold NaN or inf in batch {b} (samples "
                f"{lo}-{hi - 1}); nothing was cached for this capture."
            )
        preds = (lg[:, 0] > 0) if lg.shape[1] == 1 else lg.argmax(axis=1)
        return {
            "logits": lg,
            "predictions": preds.astype(np.int64),
            "labels": y.reshape(-1).numpy().astype(np.int64),
            "groups": (
                np.zeros(k, np.int64) if g is None else g.reshape(-1).numpy().astype(np.int64)
            ),
            "sample_id": sample_id[lo:hi],
        }
