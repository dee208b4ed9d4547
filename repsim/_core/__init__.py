"""Helpers every layer of repsim uses and that import none of them.

- :mod:`~repsim._core.validation`: array checks and conversions (one ``as_matrix``,
  ``as_vector``, ``check_consistent_length``).
- :mod:`~repsim._core.rows`: the row-count check and the row-batch iterator of streaming code.
- :mod:`~repsim._core.table`: the one tidy :class:`~repsim._core.table.Table`.
- :mod:`~repsim._core.io`: atomic file writes (bytes, text, JSON, safetensors plus JSON).
- :mod:`~repsim._core.fingerprints`: content hashes of models and data.
- :mod:`~repsim._core.hooks`: temporary hooks, frozen parameters and eval mode, always undone.
- :mod:`~repsim._core.provenance`: versions and thread counts recorded with every result.
- :mod:`~repsim._core.stats`: bootstrap, permutation tests, correlation, p-value adjustment.
- :mod:`~repsim._core.deprecation`: old import paths and argument names, with a warning.

Nothing here is imported by ``import repsim`` unless a stage needs it.
"""
