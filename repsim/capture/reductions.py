"""The names of the reductions of captured activations (definitions: :mod:`repsim.capture.hooks`).

Kept apart from the hooks so the store and the command line know the names without importing
torch. A reduction is part of every cache key: an array is named ``<layer>@<reduction>``.
"""

from __future__ import annotations

#: Reductions of channel-first maps (and of any 2-D output).
CONV_REDUCTIONS = ("flatten", "mean", "max")
#: Reductions of token sequences ``[N, T, D]`` (``tokens`` gives one row per real token).
TOKEN_REDUCTIONS = ("cls", "last", "mean_tokens", "tokens")
#: Every reduction.
REDUCTIONS = (*CONV_REDUCTIONS, *TOKEN_REDUCTIONS)
#: Reductions that give one row per sample.
PER_SAMPLE_REDUCTIONS = tuple(r for r in REDUCTIONS if r != "tokens")
#: The companion array of a ``tokens`` array: ``[n_tokens, 2]`` int64 ``(sample row, position)``.
TOKEN_INDEX = "token_index"
#: Arrays whose rows are tokens, not samples (their row count is the ``n_rows`` attr).
TOKEN_ROW_ARRAYS = ("tokens", TOKEN_INDEX)
