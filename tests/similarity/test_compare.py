import csv

import numpy as np
import pytest
import zarr

from repsim.errors import ConfigError, LayerNotFoundError, SampleOrderError, ShapeError
from repsim.similarity import (
    SimilarityTable,
    SimilarityWarning,
    cka,
    compare,
    procrustes,
    svcca,
)


class Capture(dict):
    """A duck-typed capture: a mapping of layers plus sample_id / groups / name."""

    def __init__(self, layers, sample_id=None, groups=None, name=None):
        super().__init__(layers)
        self.sample_id, self.groups, self.name = sample_id, groups, name


def make_captures(seed=0, n=120, widths=(8, 12, 5)):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, 6))
    dense, pruned = {}, {}
    for i, w in enumerate(widths):
        h = np.tanh(h @ rng.normal(size=(h.shape[1], w)))
        dense[f"l{i}"] = h
        pruned[f"l{i}"] = h * (rng.random(w) > 0.3) + 0.1 * (i + 1) * rng.normal(size=h.shape)
    ids = np.arange(n, dtype=np.int64) + 1000
    groups = np.where(np.arange(n) % 4 == 0, "minority", "majority")
    return (Capture(dense, ids, groups, "dense"), Capture(pruned, ids.copy(), groups, "pruned"))


def test_same_pairs_table_matches_direct_calls():
    a, b = make_captures()
    t = compare(a, b, measures=["cka", "cka_debiased", "svcca", "procrustes"])
    assert isinstance(t, SimilarityTable)
    assert len(t) == 3 * 4
    for r in t:
        assert r["model_a"] == "dense" and r["model_b"] == "pruned"
        assert r["layer_a"] == r["layer_b"]
        X, Y = a[r["layer_a"]], b[r["layer_b"]]
        want = {
            "cka": cka(X, Y),
            "cka_debiased": cka(X, Y, debiased=True),
            "svcca": svcca(X, Y),
            "procrustes": procrustes(X, Y),
        }[r["measure"]]
        assert r["value"] == pytest.approx(want, abs=1e-10)


def test_all_pairs_matrix_matches_pairwise_calls():
    a, b = make_captures(1)
    t = compare(a, b, pairs="all", measures=["cka", "cka_debiased"])
    for m, deb in (("cka", False), ("cka_debiased", True)):
        M = t.matrix(m)
        assert M.rows == ["l0", "l1", "l2"] and M.cols == ["l0", "l1", "l2"]
        want = np.array([[cka(a[i], b[j], debiased=deb) for j in M.cols] for i in M.rows])
        np.testing.assert_allclose(M.values, want, atol=1e-10)
    # a model against itself: CKA matrix is symmetric with a unit diagonal
    S = np.asarray(compare(a, a, pairs="all").matrix())
    np.testing.assert_allclose(S, S.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(S), 1.0, atol=1e-12)


def test_wide_layers_use_gram_route_consistently():
    a, b = make_captures(2, n=20, widths=(40, 50))
    t = compare(a, b, pairs="all", measures=["cka", "cka_debiased"])
    for r in t:
        deb = r["measure"] == "cka_debiased"
        assert r["value"] == pytest.approx(
            cka(a[r["layer_a"]], b[r["layer_b"]], debiased=deb), abs=1e-10
        )


def test_streaming_path_equals_in_memory(tmp_path):
    a, b = make_captures(3, n=300)
    za, zb = {}, {}
    for k in a:
        za[k] = zarr.create_array(
            tmp_path / f"a_{k}", shape=a[k].shape, chunks=(64, a[k].shape[1]), dtype="f8"
        )
        za[k][:] = a[k]
        zb[k] = zarr.create_array(
            tmp_path / f"b_{k}", shape=b[k].shape, chunks=(64, b[k].shape[1]), dtype="f8"
        )
        zb[k][:] = b[k]
    za = Capture(za, a.sample_id, a.groups, "dense")
    zb = Capture(zb, b.sample_id, b.groups, "pruned")
    ms = ["cka", "cka_debiased"]
    mem = compare(a, b, measures=ms, groups=True)
    streamed = compare(za, zb, measures=ms, groups=True, batch_size=70)
    forced = compare(a, b, measures=ms, groups=True, batch_size=33)
    for r1, r2, r3 in zip(mem, streamed, forced):
        assert r1["group"] == r2["group"] == r3["group"]
        assert r2["value"] == pytest.approx(r1["value"], abs=1e-10)
        assert r3["value"] == pytest.approx(r1["value"], abs=1e-10)


def test_group_conditional_values():
    a, b = make_captures(4)
    t = compare(a, b, measures=["cka", "svcca"], groups=a.groups)
    groups = {r["group"] for r in t}
    assert groups == {None, "majority", "minority"}
    for r in t:
        idx = (
            np.arange(len(a.groups))
            if r["group"] is None
            else np.flatnonzero(a.groups == r["group"])
        )
        X, Y = a[r["layer_a"]][idx], b[r["layer_b"]][idx]
        want = cka(X, Y) if r["measure"] == "cka" else svcca(X, Y)
        assert r["value"] == pytest.approx(want, abs=1e-10)
        assert r["n"] == len(idx)
    M = t.matrix("cka", group="minority").values  # same pairs: only the diagonal is computed
    assert np.all(np.isfinite(np.diag(M))) and np.isnan(M[0, 1])


def test_tiny_group_is_nan_with_warning():
    a, b = make_captures(5, n=40)
    labels = np.array(["g"] * 37 + ["tiny"] * 3)
    with pytest.warns(SimilarityWarning, match="tiny"):
        t = compare(a, b, groups=labels)
    assert np.isnan(t.value(group="tiny", layer_a="l0"))


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    a, b = make_captures(6)
    t1 = compare(a, b, layers=["l1"], measures=["cka", "procrustes"], n_boot=60, seed=11)
    t2 = compare(a, b, layers=["l1"], measures=["cka", "procrustes"], n_boot=60, seed=11)
    assert t1.rows == t2.rows
    for r in t1:
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["ci_low"] < r["ci_high"]
        assert r["n_boot"] == 60
    # independent check of the percentile interval for CKA
    rng = np.random.default_rng(11)
    X, Y = a["l1"], b["l1"]
    boots = [cka(X[i], Y[i]) for i in (rng.integers(0, 120, size=120) for _ in range(60))]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    r = t1.filter(measure="cka").rows[0]
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_sample_order_checks():
    a, b = make_captures(7)
    b.sample_id = b.sample_id[::-1].copy()
    with pytest.raises(SampleOrderError, match="different order"):
        compare(a, b)
    b.sample_id = a.sample_id + 1
    with pytest.raises(SampleOrderError, match="different samples"):
        compare(a, b)
    b.sample_id = a.sample_id[:-1]
    with pytest.raises(SampleOrderError, match="120 samples"):
        compare(a, b)
    # plain dicts: explicit ids
    with pytest.raises(SampleOrderError, match="first at 0"):
        compare(dict(a), dict(b), sample_id_a=np.arange(120), sample_id_b=np.arange(1, 121))
    assert len(compare(dict(a), dict(b))) == 3


def test_layer_selection_and_errors():
    a, b = make_captures(8)
    t = compare(a, b, layers={"l0": "l1"})
    assert [(r["layer_a"], r["layer_b"]) for r in t] == [("l0", "l1")]
    with pytest.raises(LayerNotFoundError, match="Did you mean 'l1'"):
        compare(a, b, layers=["l11"])
    with pytest.raises(LayerNotFoundError, match="share no layer"):
        compare(a, {"other": b["l0"]})
    with pytest.raises(ConfigError, match="Did you mean 'svcca'"):
        compare(a, b, measures=["svca"])
    with pytest.raises(ConfigError):
        compare(a, b, options={"svcca": {"keep": 0.9}})
    with pytest.raises(ShapeError):
        compare(a, {"l0": b["l0"][:-1]})
    with pytest.raises(ShapeError):
        compare(a, b, groups=np.zeros(5))


def test_options_are_passed():
    a, b = make_captures(9)
    t = compare(a, b, layers="l0", measures=["svcca"], options={"svcca": {"keep": 0.5}})
    assert t.rows[0]["value"] == pytest.approx(svcca(a["l0"], b["l0"], keep=0.5), abs=1e-12)


def test_table_exports(tmp_path):
    a, b = make_captures(10)
    t = compare(a, b, measures=["cka"], groups=True)
    path = t.to_csv(tmp_path / "out" / "t.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(t)
    assert list(rows[0]) == [
        "model_a",
        "layer_a",
        "model_b",
        "layer_b",
        "measure",
        "value",
        "group",
        "n",
    ]
    assert float(rows[0]["value"]) == pytest.approx(t.rows[0]["value"])
    recs = t.to_records()
    assert recs == [{c: r.get(c) for c in t.columns} for r in t.rows]
    with pytest.raises(ConfigError):
        t.value(measure="cka")


def test_too_few_samples_for_debiased_becomes_nan_in_table():
    a, b = make_captures(11, n=40)
    labels = np.array(["big"] * 37 + ["small"] * 3)
    with pytest.warns(SimilarityWarning, match="small"):
        t = compare(a, b, measures=["cka_debiased"], groups=labels, min_group_size=2, layers="l0")
    assert np.isnan(t.value(group="small"))
    assert np.isfinite(t.value(group="big"))


def test_old_by_spelling_warns_and_gives_the_same_table():
    a, b = make_captures(7, n=60)
    new = compare(a, b, measures=["cka"], groups=a.groups, n_boot=10, seed=2)
    with pytest.warns(DeprecationWarning, match=r"compare\(by=\.\.\.\) is deprecated; use groups="):
        old = compare(a, b, measures=["cka"], by=a.groups, n_boot=10, seed=2)
    assert old.to_records() == new.to_records()
    with pytest.raises(TypeError, match="both 'by'"):
        compare(a, b, by=a.groups, groups=a.groups)
