import math

import numpy as np
import pytest
import torch

from repsim.compress import (
    attention_map,
    attention_transfer_loss,
    distill,
    kd_loss,
    prune,
)
from repsim.errors import LayerNotFoundError, ModelError
from repsim.models import build_model
from repsim.train import fit


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kd_loss_hand_computation():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 4))
    t = rng.normal(size=(5, 4)) * 3
    y = rng.integers(0, 4, size=5)
    T, alpha, gamma = 3.0, 0.7, 0.2
    ps = _softmax(s)
    ce = -np.mean(np.log(ps[np.arange(5), y]))
    pt, pst = _softmax(t / T), _softmax(s / T)
    kl = np.sum(pt * (np.log(pt) - np.log(pst))) / 5
    expected = gamma * ce + alpha * T**2 * kl
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T=T, alpha=alpha, gamma=gamma)
    assert math.isclose(float(got), expected, rel_tol=1e-10)


def test_kd_loss_identities():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    # identical logits: only the CE term is left
    assert torch.allclose(
        kd_loss(z, z, y, gamma=1.0, alpha=5.0), torch.nn.functional.cross_entropy(z, y)
    )
    with pytest.raises(ModelError, match="same output size"):
        kd_loss(z, torch.randn(6, 4), y)


def test_attention_map_and_loss():
    a = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    q = attention_map(a)
    raw = (a**2).mean(1).flatten(1)
    assert torch.allclose(q, raw / raw.norm(dim=1, keepdim=True))
    assert float(attention_transfer_loss([a], [a])) == 0.0
    b = torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(2))
    expected = (attention_map(a) - attention_map(b)).norm(dim=1).mean()
    assert torch.allclose(attention_transfer_loss([a, a], [b, b]), 2 * expected)
    # scale invariance of the normalised maps
    assert torch.allclose(attention_transfer_loss([3 * a], [b]), expected)


@pytest.fixture(scope="module")
def teacher(digits):
    m = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=0)
    fit(m, digits.train, epochs=3, batch_size=64, lr=3e-3, seed=0, progress=False)
    return m


def test_distill_pruned_student_keeps_zeros(teacher, digits):
    student, rec = prune(teacher, 0.9)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    out, res = distill(
        teacher, student, digits.train, epochs=2, lr=3e-3, seed=0, test=digits.test, progress=False
    )
    mask = out.fc.weight_mask.bool()
    assert (out.fc.weight[~mask] == 0).all()
    assert int((out.fc.weight == 0).sum()) >= rec.layers["fc.weight"]["n_zero"]
    # teacher unchanged and still trainable afterwards
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())
    assert res.test.accuracy > 0.5
    # the student passed in was copied, not trained
    assert torch.equal(student.fc.weight_orig, prune(teacher, 0.9)[0].fc.weight_orig)


def test_distill_deterministic(teacher, digits):
    small = build_model("mlp", input_shape=(1, 8, 8), n_classes=10, seed=3, hidden=(16,))
    a, _ = distill(teacher, small, digits.train, epochs=1, seed=1, progress=False)
    b, res = distill(teacher, small, digits, epochs=1, seed=1, progress=False)
    assert res.test is not None and len(res.test.labels) == len(digits.test)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_distill_attention_transfer(teacher, digits):
    student = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=7, width=8)
    out, res = distill(
        teacher,
        student,
        digits.train,
        epochs=1,
        seed=0,
        progress=False,
        attention=["features.relu2", "features.relu3"],
        beta=10.0,
    )
    assert np.isfinite(res.history[-1]["train_loss"])
    with pytest.raises(LayerNotFoundError, match="features.relu2"):
        distill(
            teacher, student, digits.train, epochs=1, attention=["features.relu_2"], progress=False
        )


def test_different_output_sizes(teacher, digits):
    student = build_model("mlp", input_shape=(1, 8, 8), n_classes=5, seed=0)
    with pytest.raises(ModelError, match="same number of classes"):
        distill(teacher, student, digits.train, epochs=1)


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_teacher_unfrozen_and_hooks_removed_when_distillation_fails(teacher, digits):
    student = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=7, width=8)
    # a bad teacher layer fails while the loss hooks the teacher (after the freeze)
    with pytest.raises(LayerNotFoundError, match="The teacher has no layer 'features.relu_3'"):
        distill(
            teacher,
            student,
            digits.train,
            epochs=1,
            attention={"features.relu2": "features.relu2", "features.relu3": "features.relu_3"},
            progress=False,
        )
    assert all(p.requires_grad for p in teacher.parameters())
    assert _n_hooks(teacher) == 0

    class Stop(Exception):
        pass

    class StopAfterOneStep:
        def on_step_end(self, state):
            assert not any(p.requires_grad for p in teacher.parameters())  # frozen meanwhile
            raise Stop

    # an error inside training (here from a callback) unfreezes and unhooks both models too
    with pytest.raises(Stop):
        distill(
            teacher,
            student,
            digits.train,
            epochs=1,
            attention=["features.relu2"],
            inplace=True,
            callbacks=[StopAfterOneStep()],
            progress=False,
        )
    assert all(p.requires_grad for p in teacher.parameters())
    assert _n_hooks(teacher) == 0 and _n_hooks(student) == 0


def test_distillation_loss_as_context_manager_removes_its_hooks(teacher):
    from repsim.compress import DistillationLoss

    student = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=7, width=8)
    with DistillationLoss(teacher, attention={"features.relu2": "features.relu2"}) as loss:
        loss.attach(student)
        assert _n_hooks(teacher) == 1 and _n_hooks(student) == 1
    assert _n_hooks(teacher) == 0 and _n_hooks(student) == 0
