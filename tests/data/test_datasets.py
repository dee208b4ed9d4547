import gzip
import shutil

import numpy as np
import pytest

from repsim.data import GroupedData, list_datasets, load_dataset, read_idx
from repsim.errors import DataError


def test_registry_lists_all_builtins():
    assert set(list_datasets()) == {
        "digits",
        "digits-imbalanced",
        "digits-colour",
        "adult",
        "fashion-mnist",
        "spurious-text",
    }


def test_unknown_dataset_and_option_name_the_problem():
    with pytest.raises(DataError, match="Unknown dataset 'digit'.*'digits'"):
        load_dataset("digit")
    with pytest.raises(DataError, match="no option 'rhoo'.*'rho'"):
        load_dataset("digits-colour", rhoo=0.9)


def test_digits_split_is_stable_disjoint_and_stratified():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert np.array_equal(a.train.sample_id, b.train.sample_id)
    assert a.fingerprint() == b.fingerprint()
    assert not set(a.train.sample_id) & set(a.test.sample_id)
    assert len(a.train) + len(a.test) == 1797
    frac = np.bincount(a.test.y) / np.bincount(np.concatenate([a.train.y, a.test.y]))
    assert np.allclose(frac, 0.3, atol=0.02)
    assert a.train.x.dtype == np.float32 and a.train.x.shape[1:] == (1, 8, 8)
    assert 0.0 <= a.train.x.min() and a.train.x.max() <= 1.0
    assert a.train.group_names == a.train.class_names


def test_digits_imbalanced_cuts_only_training_minority():
    base = load_dataset("digits")
    d = load_dataset("digits-imbalanced", minority_classes=[3, 8], fraction=0.2)
    for c in range(10):
        n_base = int((base.train.y == c).sum())
        n = int((d.train.y == c).sum())
        assert n == (round(0.2 * n_base) if c in (3, 8) else n_base)
    assert np.array_equal(d.test.sample_id, base.test.sample_id)
    assert d.train.group_names == ("majority", "minority")
    assert np.array_equal(d.test.groups, np.isin(d.test.y, [3, 8]).astype(int))
    cls = d.test.with_groups("class")
    assert np.array_equal(cls.groups, d.test.y)
    with pytest.raises(DataError, match="fraction"):
        load_dataset("digits-imbalanced", fraction=0)


def test_digits_colour_bias_rates_and_groups():
    d = load_dataset("digits-colour", rho=0.9, seed=3)
    colour = d.train.attributes["colour"]
    match = np.mean(colour == d.train.y)
    assert abs(match - 0.9) < 0.04
    test_match = np.mean(d.test.attributes["colour"] == d.test.y)
    assert abs(test_match - 0.1) < 0.05
    assert np.array_equal(d.train.groups, (colour != d.train.y).astype(int))
    assert d.train.x.shape[1:] == (3, 8, 8)
    # the background (intensity 0 pixels) is painted with the image's colour
    from repsim.data.digits import COLOURS

    grey = load_dataset("digits").train
    i = 0
    bg = grey.x[grey.sample_id == d.train.sample_id[i]][0, 0] == 0
    assert np.allclose(d.train.x[i][:, bg].T, COLOURS[colour[i]])
    assert d.val is not None and len(d.val) > 0
    assert "SYNTHETIC" in d.description


def test_adult_groups_and_preprocessing():
    d = load_dataset("adult")
    assert len(d.train) == 30162 and len(d.test) == 15060
    assert d.train.group_attribute == "sex"
    assert d.train.attribute_names["race"] == (
        "Amer-Indian-Eskimo",
        "Asian-Pac-Islander",
        "Black",
        "Other",
        "White",
    )
    assert set(d.train.attributes) == {"sex", "race", "age"}
    # continuous columns standardised on train only
    assert np.allclose(d.train.x[:, :6].astype(np.float64).mean(0), 0, atol=1e-5)
    assert np.allclose(d.train.x[:, :6].astype(np.float64).std(0), 1, atol=1e-5)
    assert not np.allclose(d.test.x[:, :6].mean(0), 0, atol=1e-4)
    assert abs(d.train.y.mean() - 0.249) < 0.01
    dropped = load_dataset("adult", drop_sensitive=True)
    assert dropped.train.x.shape[1] == d.train.x.shape[1] - 7  # 2 sexes + 5 races


def test_adult_missing_and_malformed_files(tmp_path, shared_data):
    with pytest.raises(DataError, match="looked in"):
        load_dataset("adult", root=tmp_path)
    shutil.copy(shared_data / "adult" / "adult.test.gz", tmp_path / "adult.test.gz")
    (tmp_path / "adult.data").write_text("39, State-gov, 77516\n")
    with pytest.raises(DataError, match="line 1"):
        load_dataset("adult", root=tmp_path)


def test_adult_from_shared_data_equals_packaged_copy(shared_data):
    a = load_dataset("adult", root=shared_data / "adult")
    b = load_dataset("adult")
    assert a.train.fingerprint() == b.train.fingerprint()


def test_fashion_mnist_reads_idx(fashion_dir):
    d = load_dataset("fashion-mnist", root=fashion_dir, train_size=2000, test_size=500)
    assert d.train.x.shape[1:] == (1, 28, 28)
    assert abs(len(d.train) - 2000) <= 10 and abs(len(d.test) - 500) <= 10
    assert not set(d.train.sample_id) & set(d.test.sample_id)
    imb = load_dataset("fashion-mnist", root=fashion_dir, minority_classes=[0], fraction=0.1)
    assert (imb.train.y == 0).sum() == 600 and imb.train.group_names == ("majority", "minority")


def test_fashion_mnist_env_var(fashion_dir, monkeypatch):
    monkeypatch.setenv("REPSIM_DATA", str(fashion_dir.parent))
    d = load_dataset("fashion-mnist", test_size=100, train_size=100)
    assert len(d.test) > 0


def test_fashion_mnist_missing_and_corrupt(tmp_path, fashion_dir):
    with pytest.raises(DataError, match="looked in"):
        load_dataset("fashion-mnist", root=tmp_path)
    for f in fashion_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    raw = gzip.decompress((fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset("fashion-mnist", root=tmp_path)
    bad = tmp_path / "junk"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)


def test_grouped_data_validates_its_arrays():
    x = np.zeros((3, 2), np.float32)
    ok = dict(
        y=np.array([0, 1, 0]),
        groups=np.array([0, 0, 1]),
        sample_id=np.arange(3),
        group_names=("a", "b"),
        class_names=("n", "p"),
    )
    GroupedData(x=x, **ok)
    with pytest.raises(DataError, match="not unique"):
        GroupedData(x=x, **{**ok, "sample_id": np.array([0, 0, 1])})
    with pytest.raises(DataError, match="'y' must be 1-D"):
        GroupedData(x=x, **{**ok, "y": np.array([0, 1])})
    with pytest.raises(DataError, match="group codes"):
        GroupedData(x=x, **{**ok, "groups": np.array([0, 2, 1])})
    with pytest.raises(DataError, match="NaN"):
        GroupedData(x=np.full((3, 2), np.nan, np.float32), **ok)
    with pytest.raises(DataError, match="no group attribute"):
        GroupedData(x=x, **ok).with_groups("sex")
