"""Capture: record what chosen layers compute on a dataset and cache it in Zarr.

- :mod:`~repsim.capture.hooks`: ``hooks(model, pairs)``, the context manager of forward hooks
  that copy activations inside the hook (always removed on exit), and the reductions of conv
  maps and token sequences to ``[n, features]`` (names in :mod:`~repsim.capture.reductions`).
- :mod:`~repsim.capture.record`: :func:`record` / :func:`record_reductions`, the one forward
  loop, and :class:`Capture`, the mapping of layer -> activations it returns.
- :mod:`~repsim.capture.store`: :class:`ActivationStore`, the Zarr cache with atomic entries.
- :mod:`~repsim.capture.shards`: capture split by sample ranges across workers (the same loop,
  on a row range).
"""

from __future__ import annotations

from repsim.capture.hooks import reduce_activation
from repsim.capture.record import (
    Capture,
    combine_reductions,
    data_fingerprint,
    record,
    record_reductions,
)
from repsim.capture.reductions import PER_SAMPLE_REDUCTIONS, TOKEN_REDUCTIONS
from repsim.capture.shards import finalize_shards, record_shard, shard_ranges, shard_status
from repsim.capture.store import (
    META_ARRAYS,
    REDUCTIONS,
    ActivationStore,
    EntryInfo,
    Problem,
    array_name,
    entry_key,
    parse_array_name,
)

__all__ = [
    "META_ARRAYS",
    "PER_SAMPLE_REDUCTIONS",
    "REDUCTIONS",
    "TOKEN_REDUCTIONS",
    "ActivationStore",
    "Capture",
    "EntryInfo",
    "Problem",
    "array_name",
    "combine_reductions",
    "data_fingerprint",
    "entry_key",
    "finalize_shards",
    "parse_array_name",
    "record",
    "record_reductions",
    "record_shard",
    "reduce_activation",
    "shard_ranges",
    "shard_status",
]
