import warnings

import numpy as np
import pytest
import torch

from repsim.errors import ConfigError
from repsim.similarity import CCAResult, SimilarityWarning, mean_cca, pwcca, svcca
from repsim.similarity.cca import n_kept
from tests.similarity import _reference as ref


def low_rank_pair(rng, n=300, k=6, dx=15, dy=12, noise=0.05):
    Z = rng.normal(size=(n, k)) * np.linspace(3, 0.5, k)
    X = Z @ rng.normal(size=(k, dx)) + noise * rng.normal(size=(n, dx))
    Y = Z @ rng.normal(size=(k, dy)) + noise * rng.normal(size=(n, dy))
    return X, Y


def test_mean_cca_matches_classical_cca():
    rng = np.random.default_rng(0)
    X, Y = low_rank_pair(rng, noise=0.5)
    res = mean_cca(X, Y, return_details=True)
    expected = ref.canonical_correlations_ref(X, Y)
    np.testing.assert_allclose(res.correlations, expected, atol=1e-10)
    assert res.value == pytest.approx(expected.mean(), abs=1e-12)
    assert (res.kept_x, res.kept_y) == (15, 12)


def test_mean_cca_invariant_to_invertible_linear_map_and_translation():
    rng = np.random.default_rng(1)
    X, Y = low_rank_pair(rng, noise=0.5)
    A = rng.normal(size=(15, 15))
    B = rng.normal(size=(12, 12)) + 3 * np.eye(12)
    assert mean_cca(X @ A + 5.0, Y @ B - 2.0) == pytest.approx(mean_cca(X, Y), abs=1e-9)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_svcca_matches_reference_truncation_and_cca(keep):
    X, Y = low_rank_pair(np.random.default_rng(2), noise=0.3)
    assert svcca(X, Y, keep=keep) == pytest.approx(ref.svcca_ref(X, Y, keep), abs=1e-10)


def test_svcca_keeps_more_than_one_component():
    # a spectrum where one component holds ~60% of the variance: naive rules keep only 1
    X, Y = low_rank_pair(np.random.default_rng(3), noise=0.01)
    res = svcca(X, Y, return_details=True)
    assert res.kept_x >= 5 and res.kept_y >= 5
    assert len(res.correlations) == min(res.kept_x, res.kept_y)
    assert res.value > 0.99  # a shared 6-dim latent


def test_keep_rules():
    s = np.array([4.0, 2.0, 1.0, 1.0])
    # variance shares: 16/22, 20/22, 21/22, 1  ; |s| shares: 4/8, 6/8, 7/8, 1
    assert n_kept(s, 0.72, "variance") == 1
    assert n_kept(s, 0.9, "variance") == 2
    assert n_kept(s, 0.9, "singular_values") == 4
    assert n_kept(s, 0.75, "singular_values") == 2
    assert n_kept(s, 1.0, "variance") == 4
    assert n_kept(s, n_components=3) == 3
    assert n_kept(s, n_components=10) == 4
    with pytest.raises(ConfigError):
        n_kept(s, 1.5)
    with pytest.raises(ConfigError):
        n_kept(s, 0.9, "energy")


def test_singular_value_rule_keeps_at_least_as_many():
    X, Y = low_rank_pair(np.random.default_rng(4), noise=0.2)
    v = svcca(X, Y, return_details=True)
    s = svcca(X, Y, rule="singular_values", return_details=True)
    assert s.kept_x >= v.kept_x and s.kept_y >= v.kept_y


def test_svcca_with_keep_one_is_mean_cca():
    X, Y = low_rank_pair(np.random.default_rng(5), noise=0.5)
    assert svcca(X, Y, keep=1.0) == pytest.approx(mean_cca(X, Y), abs=1e-10)


def test_pwcca_matches_reference_weights():
    X, Y = low_rank_pair(np.random.default_rng(6), dx=8, dy=12, noise=0.5)
    res = pwcca(X, Y, return_details=True)
    assert res.weights_side == "X"
    assert res.weights.sum() == pytest.approx(1.0)
    assert res.value == pytest.approx(ref.pwcca_ref(X, Y), abs=1e-10)
    # the side with fewer dimensions supplies the weights, whichever argument it is
    res_swapped = pwcca(Y, X, return_details=True)
    assert res_swapped.weights_side == "Y"
    assert res_swapped.value == pytest.approx(res.value, abs=1e-10)


def test_pwcca_identical_is_one():
    X, _ = low_rank_pair(np.random.default_rng(7), noise=0.5)
    assert pwcca(X, X) == pytest.approx(1.0, abs=1e-10)
    assert svcca(X, 3 * X) == pytest.approx(1.0, abs=1e-10)


def test_dead_units_dropped_and_reported():
    rng = np.random.default_rng(8)
    X, Y = low_rank_pair(rng, noise=0.5)
    Xd = np.concatenate([X, np.zeros((len(X), 4)), np.full((len(X), 2), 1000.5)], axis=1)
    with pytest.warns(SimilarityWarning, match="dropped 6 constant"):
        res = mean_cca(Xd, Y, return_details=True)
    assert res.dropped_x == 6 and res.dropped_y == 0
    assert res.value == pytest.approx(mean_cca(X, Y), abs=1e-10)
    with pytest.warns(SimilarityWarning):
        assert svcca(Xd, Y) == pytest.approx(svcca(X, Y), abs=1e-10)
    with pytest.warns(SimilarityWarning):
        assert pwcca(Xd, Y) == pytest.approx(pwcca(X, Y), abs=1e-10)


def test_rank_deficient_input_uses_its_rank():
    rng = np.random.default_rng(9)
    X, Y = low_rank_pair(rng, noise=0.5)
    Xdup = np.concatenate([X, X[:, :3] + X[:, 3:6]], axis=1)  # collinear columns
    res = mean_cca(Xdup, Y, return_details=True)
    assert res.kept_x == 15
    assert res.value == pytest.approx(mean_cca(X, Y), abs=1e-9)
    assert np.all(np.isfinite(res.correlations))


@pytest.mark.parametrize("fn", [mean_cca, pwcca, svcca])
def test_ill_posed_cca_warns_and_returns_nan(fn):
    rng = np.random.default_rng(10)
    X, Y = rng.normal(size=(20, 15)), rng.normal(size=(20, 15))
    with pytest.warns(SimilarityWarning, match="ill-posed.*CKA"):
        assert np.isnan(fn(X, Y))


def test_zero_variance_side_is_nan():
    X = np.random.default_rng(11).normal(size=(30, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert np.isnan(svcca(X, np.ones((30, 2))))
    messages = [str(w.message) for w in caught if issubclass(w.category, SimilarityWarning)]
    assert any("2 of 2 from Y" in m for m in messages)
    assert any("zero variance" in m for m in messages)


def test_float32_offset_and_torch_inputs():
    rng = np.random.default_rng(12)
    X, Y = low_rank_pair(rng, noise=0.3)
    X32 = (np.maximum(X, 0) + 1000).astype(np.float32)
    Y32 = (np.maximum(Y, 0) + 1000).astype(np.float32)
    for fn in (svcca, pwcca, mean_cca):
        want = fn(X32.astype(np.float64), Y32.astype(np.float64))
        assert np.isfinite(want)
        assert fn(X32, Y32) == pytest.approx(want, abs=1e-12)
        assert fn(torch.from_numpy(X32), torch.from_numpy(Y32)) == pytest.approx(want, abs=1e-12)


def test_details_type():
    X, Y = low_rank_pair(np.random.default_rng(13))
    assert isinstance(svcca(X, Y, return_details=True), CCAResult)
    assert isinstance(svcca(X, Y), float)


def test_cca_warnings_point_at_the_caller():
    from repsim.similarity import CCAAccumulator, cca_from_accumulator

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(12, 4)), rng.normal(size=(12, 11))
    X[:, 0] = 1.0  # a dead unit
    for measure in (svcca, mean_cca, pwcca):
        with pytest.warns(SimilarityWarning) as caught:
            measure(X, Y)  # a dead unit; mean CCA and PWCCA: ill-posed, 3 + 11 > 12 - 1
        assert [w.filename for w in caught] == [__file__] * (1 if measure is svcca else 2)
    acc = CCAAccumulator().update(X[:5], Y[:5]).update(X[5:], Y[5:])
    with pytest.warns(SimilarityWarning) as caught:
        assert np.isnan(cca_from_accumulator(acc, "pwcca"))
    assert [w.filename for w in caught] == [__file__] * 2
