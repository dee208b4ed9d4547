"""The registry of similarity measures: each one's function, direction, invariances and source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repsim.errors import ConfigError, did_you_mean
from repsim.similarity.cca import mean_cca, pwcca, svcca
from repsim.similarity.cka import linear_cka, linear_cka_debiased, rbf_cka
from repsim.similarity.procrustes import procrustes
from repsim.similarity.streaming import minibatch_cka

ORTHOGONAL = "orthogonal transform"
ISOTROPIC = "isotropic scaling"
TRANSLATION = "translation"
INVERTIBLE = "invertible linear map"
PERMUTATION = "permutation of units"


@dataclass(frozen=True)
class Measure:
    """One similarity measure.

    Attributes
    ----------
    name : str
        Registry key, used by :func:`repsim.similarity.compare`.
    function : callable
        ``function(X, Y, **options) -> float``.
    larger_is_similar : bool
        True for similarities (CKA, CCA), False for distances (Procrustes).
    invariances : tuple of str
        Transformations of either side that leave the value unchanged.
    source : str
        The paper defining it.
    supports_streaming : bool
        Whether an exact batch-by-batch accumulator exists (memory ``O(d^2)``).
    description : str
        One line.
    min_n : int
        Fewest samples the measure is defined on; below it the value is NaN with a
        :class:`SimilarityWarning` (CKA of 2 samples is 1 whatever the data; the unbiased HSIC
        divides by ``n - 3``; CCA also needs ``n - 1 >= k_x + k_y`` kept dimensions, checked
        when computed).
    """

    name: str
    function: Callable[..., float]
    larger_is_similar: bool
    invariances: tuple[str, ...]
    source: str
    supports_streaming: bool
    description: str
    min_n: int = 3

    def __call__(self, X: Any, Y: Any, **options: Any) -> float:
        """Compute the measure on ``X`` and ``Y``."""
        return self.function(X, Y, **options)


_KORNBLITH = "Kornblith et al. 2019, Similarity of Neural Network Representations Revisited (ICML)"
_MEASURES: dict[str, Measure] = {
    m.name: m
    for m in [
        Measure(
            "cka",
            linear_cka,
            True,
            (ORTHOGONAL, ISOTROPIC, TRANSLATION),
            _KORNBLITH,
            True,
            "linear CKA with the biased HSIC estimator",
        ),
        Measure(
            "cka_debiased",
            linear_cka_debiased,
            True,
            (ORTHOGONAL, ISOTROPIC, TRANSLATION),
            _KORNBLITH + "; unbiased HSIC of Song et al. 2012 (JMLR), as in Nguyen et al. 2021",
            True,
            "linear CKA with the unbiased HSIC estimator (near 0 for independent data)",
            min_n=4,
        ),
        Measure(
            "cka_rbf",
            rbf_cka,
            True,
            (ORTHOGONAL, ISOTROPIC, TRANSLATION),
            _KORNBLITH,
            False,
            "RBF-kernel CKA, bandwidth = threshold x median distance (Kornblith's convention)",
        ),
        Measure(
            "minibatch_cka",
            minibatch_cka,
            True,
            (ORTHOGONAL, ISOTROPIC, TRANSLATION),
            "Nguyen, Raghu, Kornblith 2021, Do Wide and Deep Networks Learn the Same Things? "
            "(ICLR)",
            True,
            "unbiased HSIC averaged over minibatches (a different estimator from full CKA)",
            min_n=4,
        ),
        Measure(
            "svcca",
            svcca,
            True,
            (ORTHOGONAL, ISOTROPIC, TRANSLATION),
            "Raghu et al. 2017, SVCCA (NeurIPS)",
            False,
            "mean canonical correlation after keeping 99% of each side's variance",
        ),
        Measure(
            "pwcca",
            pwcca,
            True,
            (ISOTROPIC, TRANSLATION, PERMUTATION),
            "Morcos, Raghu, Bengio 2018, Insights on representational similarity in neural "
            "networks with canonical correlation (NeurIPS)",
            False,
            "canonical correlations weighted by how much of the neurons each direction explains",
        ),
        Measure(
            "mean_cca",
            mean_cca,
            True,
            (INVERTIBLE, ORTHOGONAL, ISOTROPIC, TRANSLATION),
            "Hotelling 1936 (Biometrika); rho-bar of Kornblith et al. 2019",
            False,
            "mean of all canonical correlations",
        ),
        Measure(
            "procrustes",
            procrustes,
            False,
            (ORTHOGONAL, ISOTROPIC, TRANSLATION),
            "Ding, Denain, Steinhardt 2021, Grounding Representation Similarity with "
            "Statistical Testing (NeurIPS)",
            False,
            "squared orthogonal Procrustes distance of centered, unit-norm data, in [0, 2]",
        ),
    ]
}


def measures() -> list[Measure]:
    """All registered similarity measures, in a stable order.

    Examples
    --------
    >>> [(m.name, m.larger_is_similar) for m in measures()][:2]
    [('cka', True), ('cka_debiased', True)]
    """
    return list(_MEASURES.values())


def get_measure(name: str | Measure) -> Measure:
    """Look a measure up by name; raises :class:`ConfigError` listing close names if unknown."""
    if isinstance(name, Measure):
        return name
    try:
        return _MEASURES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown similarity measure {name!r}; known: {', '.join(_MEASURES)}."
            + did_you_mean(str(name), _MEASURES)
        ) from None
