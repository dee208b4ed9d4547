"""Property-based tests (hypothesis) of the invariances each measure declares."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repsim.similarity import cka, get_measure, mean_cca, measures, procrustes, pwcca, svcca
from repsim.similarity.registry import (
    INVERTIBLE,
    ISOTROPIC,
    ORTHOGONAL,
    PERMUTATION,
    TRANSLATION,
)
from tests.similarity import _reference as ref

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pairs(draw, min_n=30, max_n=60):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(min_n, max_n))
    dx = draw(st.integers(1, 8))
    dy = draw(st.integers(1, 8))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) * rng.uniform(0.2, 5.0, dx) + rng.normal(0, 10, dx)
    Y = np.tanh(X @ rng.normal(size=(dx, dy))) + draw(st.floats(0.05, 2.0)) * rng.normal(
        size=(n, dy)
    )
    return X, Y, rng


def transformed(X, rng, kind):
    if kind == ORTHOGONAL:
        return X @ ref.random_orthogonal(X.shape[1], rng)
    if kind == ISOTROPIC:
        return X * rng.uniform(0.01, 100.0)
    if kind == TRANSLATION:
        return X + rng.normal(0, 100, X.shape[1])
    if kind == PERMUTATION:
        return X[:, rng.permutation(X.shape[1])]
    if kind == INVERTIBLE:
        A = rng.normal(size=(X.shape[1], X.shape[1])) + 2 * np.eye(X.shape[1])
        return X @ A
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "name", ["cka", "cka_debiased", "cka_rbf", "svcca", "pwcca", "mean_cca", "procrustes"]
)
@SETTINGS
@given(data=pairs())
def test_declared_invariances_hold(name, data):
    X, Y, rng = data
    m = get_measure(name)
    base = m(X, Y)
    for kind in m.invariances:
        Xt = transformed(X, rng, kind)
        Yt = transformed(Y, rng, kind)
        assert m(Xt, Yt) == pytest.approx(base, abs=1e-7), kind


@SETTINGS
@given(data=pairs())
def test_bounds_and_symmetry(data):
    X, Y, _ = data
    for deb in (False, True):
        assert cka(X, Y, debiased=deb) == pytest.approx(cka(Y, X, debiased=deb), abs=1e-12)
    assert -1e-12 <= cka(X, Y) <= 1 + 1e-12
    assert 0 <= svcca(X, Y) <= 1
    assert 0 <= mean_cca(X, Y) <= 1
    assert 0 <= pwcca(X, Y) <= 1
    assert 0 <= procrustes(X, Y) <= 2
    assert mean_cca(X, Y) == pytest.approx(mean_cca(Y, X), abs=1e-9)


@SETTINGS
@given(data=pairs(min_n=8, max_n=40))
def test_routes_agree(data):
    X, Y, _ = data
    for deb in (False, True):
        f = cka(X, Y, debiased=deb, route="feature")
        g = cka(X, Y, debiased=deb, route="gram")
        assert f == pytest.approx(g, abs=1e-10)


def test_registry_entries_are_complete():
    names = [m.name for m in measures()]
    assert len(names) == len(set(names))
    assert {
        "cka",
        "cka_debiased",
        "cka_rbf",
        "minibatch_cka",
        "svcca",
        "pwcca",
        "mean_cca",
        "procrustes",
    } <= set(names)
    for m in measures():
        assert callable(m.function) and m.source and m.invariances
        assert isinstance(m.larger_is_similar, bool)
    assert get_measure("procrustes").larger_is_similar is False
    assert get_measure("cka").supports_streaming
    assert INVERTIBLE in get_measure("mean_cca").invariances
    assert INVERTIBLE not in get_measure("svcca").invariances
