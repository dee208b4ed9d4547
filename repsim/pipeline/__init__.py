"""The pipeline: configs, model families, studies, compare reports and subnetwork runs.

These chain the stages below them; the command line (:mod:`repsim.cli`) calls them.

- :mod:`~repsim.pipeline.config`: the one TOML schema, validated on load.
- :mod:`~repsim.pipeline.family`: populations of dense and compressed models, cached.
- :mod:`~repsim.pipeline.study`: ``repsim run``, a study end to end.
- :mod:`~repsim.pipeline.compare_report`: ``repsim compare A B``.
- :mod:`~repsim.pipeline.run_search`: ``repsim subnetwork search|report``.
"""

from __future__ import annotations

from repsim.pipeline.study import run_study

__all__ = ["run_study"]
