"""Layer similarity measures: CKA (linear, RBF, debiased), SVCCA, PWCCA, mean CCA, Procrustes.

Pure functions ``measure(X, Y, **options) -> float`` on ``[n, d]`` activations (numpy or torch,
any float dtype; computed in float64 after centering columns), exact streaming accumulators,
a registry (:func:`measures`), :func:`compare` over two captured models, and out-of-core
drivers that stream the measures from Zarr (:func:`stream_cka`, :func:`stream_cca`).
"""

from __future__ import annotations

from repsim.errors import SimilarityWarning
from repsim.similarity.bootstrap import bootstrap_linear_cka
from repsim.similarity.cca import CCAResult, mean_cca, pwcca, svcca
from repsim.similarity.cka import (
    cka,
    hsic_unbiased_gram,
    linear_cka,
    linear_cka_debiased,
    plan_cka,
    rbf_cka,
)
from repsim.similarity.compare import check_sample_order, compare
from repsim.similarity.multi import MultiLayerCKAAccumulator
from repsim.similarity.outofcore import (
    QR_MEASURES,
    CCAAccumulator,
    cca_from_accumulator,
    stream_cca,
    stream_cka,
)
from repsim.similarity.procrustes import procrustes
from repsim.similarity.registry import Measure, get_measure, measures
from repsim.similarity.sketch import SketchedCKA, sketched_cka
from repsim.similarity.streaming import (
    LinearCKAAccumulator,
    MinibatchCKAAccumulator,
    minibatch_cka,
    stream_linear_cka,
)
from repsim.similarity.table import LabelledMatrix, SimilarityTable

__all__ = [
    "QR_MEASURES",
    "CCAAccumulator",
    "CCAResult",
    "LabelledMatrix",
    "LinearCKAAccumulator",
    "Measure",
    "MinibatchCKAAccumulator",
    "MultiLayerCKAAccumulator",
    "SketchedCKA",
    "SimilarityTable",
    "SimilarityWarning",
    "bootstrap_linear_cka",
    "check_sample_order",
    "cka",
    "compare",
    "get_measure",
    "hsic_unbiased_gram",
    "linear_cka",
    "linear_cka_debiased",
    "mean_cca",
    "measures",
    "minibatch_cka",
    "plan_cka",
    "cca_from_accumulator",
    "procrustes",
    "pwcca",
    "rbf_cka",
    "sketched_cka",
    "stream_cca",
    "stream_cka",
    "stream_linear_cka",
    "svcca",
]
