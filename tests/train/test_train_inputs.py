"""fit/evaluate/distill on token ids, dict inputs, transformers outputs and plain containers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from repsim.compress import distill
from repsim.data import as_grouped
from repsim.errors import DataError, ModelError
from repsim.models import model_logits, set_output_rule
from repsim.train import evaluate, fit, predict_logits
from tests.models import tiny_hf


@pytest.fixture(scope="module")
def task():
    return as_grouped(tiny_hf.token_task(n=96), name="tokens")


def test_fit_on_token_ids_keeps_integers():
    task = tiny_hf.token_task(n=64)
    net = tiny_hf.TokenNet()
    ds = TensorDataset(
        torch.from_numpy(task["input_ids"]),
        torch.from_numpy(task["label"]),
        torch.from_numpy(task["group"]),
    )
    res = fit(net, ds, test=ds, epochs=15, lr=1e-2, batch_size=16, seed=0)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    with torch.no_grad():
        direct = net(torch.from_numpy(task["input_ids"])).numpy()
    np.testing.assert_allclose(res.test.logits, direct, rtol=1e-5, atol=1e-6)
    assert np.array_equal(res.test.groups, task["group"])
    # numpy arrays (x, y, groups) train the same way, bit for bit
    again = tiny_hf.TokenNet()
    again.load_state_dict(tiny_hf.TokenNet().state_dict())
    first = tiny_hf.TokenNet()
    first.load_state_dict(again.state_dict())
    fit(first, ds, epochs=2, seed=1)
    fit(again, (task["input_ids"], task["label"], task["group"]), epochs=2, seed=1)
    for p, q in zip(first.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fit_dict_inputs_tuple_output_and_numpy_arrays(task):
    net = tiny_hf.dict_net()
    res = fit(net, task, epochs=25, lr=1e-2, batch_size=32, seed=0)
    assert res.history[-1]["train_loss"] < 0.8 * res.history[0]["train_loss"]
    ev = evaluate(net, task)
    with torch.no_grad():
        direct = net(**task.inputs())[0].numpy()
    np.testing.assert_allclose(ev.logits, direct, rtol=1e-5, atol=1e-6)
    # the same through raw numpy arrays plus labels
    raw = tiny_hf.token_task(n=96)
    ev2 = evaluate(
        net,
        ({"input_ids": raw["input_ids"], "attention_mask": raw["attention_mask"]}, raw["label"]),
    )
    np.testing.assert_allclose(ev2.logits, ev.logits)
    logits = predict_logits(
        net, {"input_ids": raw["input_ids"], "attention_mask": raw["attention_mask"]}
    )
    np.testing.assert_allclose(logits, ev.logits)


def test_fit_is_deterministic_with_dict_inputs(task):
    a, b = tiny_hf.dict_net(seed=1), tiny_hf.dict_net(seed=1)
    fit(a, task, epochs=2, seed=5)
    fit(b, task, epochs=2, seed=5)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_fit_bert_model_output(task):
    bert = tiny_hf.tiny_bert(num_labels=2)
    before = evaluate(bert, task)
    res = fit(bert, task, test=task, epochs=4, lr=3e-3, batch_size=16, seed=0)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    with torch.no_grad():
        direct = bert(**task.inputs()).logits.numpy()
    np.testing.assert_allclose(res.test.logits, direct, rtol=1e-4, atol=1e-5)
    assert not np.allclose(before.logits, res.test.logits)


def test_gpt2_needs_a_token_rule_then_trains_through_label_words(task):
    gpt = tiny_hf.tiny_gpt2()
    with pytest.raises(ModelError, match="declare which token"):
        evaluate(gpt, task)
    set_output_rule(gpt, token="last", classes=[2, 3])
    ev = evaluate(gpt, task)
    with torch.no_grad():
        x = task.inputs(slice(0, 4))
        full = gpt(**x).logits
        last = x["attention_mask"].sum(1) - 1  # right padding: last real token
        direct = full[torch.arange(4), last][:, [2, 3]].numpy()
    np.testing.assert_allclose(ev.logits[:4], direct, rtol=1e-5, atol=1e-6)
    res = fit(gpt, task, epochs=2, lr=3e-3, batch_size=32, seed=0)
    assert np.isfinite(res.history[-1]["train_loss"])


def test_custom_loss_receives_the_dict(task):
    seen = []

    def loss(model, x, y):
        seen.append(sorted(x))
        return F.cross_entropy(model_logits(model, x), y)

    fit(tiny_hf.dict_net(), task, epochs=1, batch_size=48, loss=loss)
    assert seen == [["attention_mask", "input_ids"]] * 2


def test_wrong_inputs_clear_error(task):
    with pytest.raises(DataError, match="cannot take keyword inputs"):
        fit(tiny_hf.TokenNet(), task, epochs=1)
    with pytest.raises(DataError, match="expected a GroupedData"):
        fit(tiny_hf.TokenNet(), object(), epochs=1)


def test_distill_bert_into_dict_student_on_tensor_dataset_and_dicts(task):
    teacher = tiny_hf.tiny_bert(num_labels=2)
    student, res = distill(teacher, tiny_hf.dict_net(), task, epochs=3, lr=1e-2, test=task, seed=0)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    raw = tiny_hf.token_task(n=40)
    tds = TensorDataset(
        torch.from_numpy(raw["input_ids"]),
        torch.from_numpy(raw["label"]),
        torch.from_numpy(raw["group"]),
    )
    s2, r2 = distill(tiny_hf.TokenNet(), tiny_hf.TokenNet(dim=4), tds, epochs=1, seed=0)
    assert np.isfinite(r2.history[0]["train_loss"])
    x, y, g = (
        np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32),
        np.arange(20) % 2,
        np.arange(20) % 3,
    )
    lin_t, lin_s = torch.nn.Linear(6, 2), torch.nn.Linear(6, 2)
    _, r3 = distill(lin_t, lin_s, (x, y, g), epochs=1)
    assert np.isfinite(r3.history[0]["train_loss"])
