import numpy as np
import pytest
import torch

from repsim.data import load_dataset
from repsim.errors import ConfigError, DataError
from repsim.models import build_model
from repsim.train import evaluate, fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train_cnn(digits, seed):
    model = build_model("cnn", input_shape=digits.train.input_shape, n_classes=10, seed=seed)
    return fit(model, digits.train, test=digits.test, epochs=10, batch_size=64, lr=3e-3, seed=seed)


def test_cnn_on_digits_reaches_95_percent_and_is_bit_reproducible(digits):
    a = _train_cnn(digits, seed=0)
    b = _train_cnn(digits, seed=0)
    assert a.test.accuracy >= 0.95
    assert np.array_equal(a.test_logits, b.test_logits)  # bit for bit
    c = _train_cnn(digits, seed=1)
    assert not np.array_equal(a.test_logits, c.test_logits)


def test_mlp_on_adult_reaches_84_percent():
    adult = load_dataset("adult")
    model = build_model(
        "mlp", input_shape=adult.train.input_shape, n_classes=2, seed=0, hidden=(64, 32)
    )
    result = fit(model, adult.train, test=adult.test, epochs=5, batch_size=256, lr=1e-3, seed=0)
    assert result.test.accuracy >= 0.84


def test_evaluate_aligns_outputs_with_data(digits):
    model = build_model("mlp", input_shape=digits.test.input_shape, n_classes=10, seed=0)
    ev = evaluate(model, digits.test, batch_size=100)
    assert ev.logits.shape == (len(digits.test), 10)
    assert np.array_equal(ev.sample_id, digits.test.sample_id)
    assert np.array_equal(ev.labels, digits.test.y)
    assert np.array_equal(ev.groups, digits.test.groups)
    with torch.no_grad():
        direct = model.eval()(torch.from_numpy(digits.test.x[:7])).numpy()
    np.testing.assert_allclose(ev.logits[:7], direct, rtol=1e-5, atol=1e-6)
    assert np.array_equal(ev.predictions, ev.logits.argmax(1))


def test_fit_leaves_global_rng_untouched(digits):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    model = build_model("mlp", input_shape=digits.train.input_shape, n_classes=10, seed=0)
    fit(model, digits.train.subset(slice(0, 64)), epochs=1, seed=3)
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_restores_best_and_callbacks_run(digits):
    seen = []

    class Recorder:
        def on_epoch_end(self, state):
            seen.append(state.epoch)

    model = build_model("mlp", input_shape=digits.train.input_shape, n_classes=10, seed=0)
    res = fit(
        model,
        digits.train,
        val=digits.test,
        epochs=30,
        lr=3e-3,
        patience=2,
        seed=0,
        callbacks=[Recorder()],
    )
    assert seen == list(range(len(res.history)))
    best = max(h["val_acc"] for h in res.history)
    assert res.history[res.best_epoch]["val_acc"] == best
    assert evaluate(model, digits.test).accuracy == pytest.approx(best)


def test_fit_bad_input(digits):
    model = build_model("mlp", input_shape=(3,), n_classes=10)
    with pytest.raises(DataError, match="cannot take inputs"):
        fit(model, digits.train, epochs=1)
    wrong = build_model("mlp", input_shape=digits.train.input_shape, n_classes=4)
    with pytest.raises(DataError, match="10 classes"):
        fit(wrong, digits.train, epochs=1)
    good = build_model("mlp", input_shape=digits.train.input_shape, n_classes=10)
    with pytest.raises(ConfigError, match="validation split"):
        fit(good, digits.train, epochs=1, patience=2)
    with pytest.raises(ConfigError, match="optimizer"):
        fit(good, digits.train, epochs=1, optimizer="adagrad")
