"""Per-group gradient norm and Hutchinson Hessian trace against exact computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from repsim.data.base import GroupedData
from repsim.errors import ConfigError
from repsim.saliency import disparate_impact_predictors, group_gradient_norm, group_hessian_trace


def tiny() -> tuple[nn.Module, GroupedData]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    model = model.float()
    rng = np.random.default_rng(0)
    data = GroupedData(
        x=rng.normal(size=(30, 3)).astype(np.float32),
        y=rng.integers(0, 3, size=30),
        groups=(np.arange(30) < 10).astype(np.int64),
        sample_id=np.arange(30),
        group_names=("rest", "first10"),
        class_names=("0", "1", "2"),
    )
    return model, data


def exact(model: nn.Module, data: GroupedData, rows: np.ndarray) -> tuple[float, float]:
    """Exact gradient norm and Hessian trace of the group's mean CE (float64, full Hessian)."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().double() for _, p in model.named_parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])
    m64 = model.double()
    x = torch.from_numpy(data.x[rows]).double()
    y = torch.from_numpy(data.y[rows])

    def f(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, sizes)
        state = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(m64, state, (x,)), y)

    hess = torch.autograd.functional.hessian(f, flat0)
    grad = torch.autograd.functional.jacobian(f, flat0)
    model.float()
    return float(grad.norm()), float(torch.trace(hess))


def test_gradient_norm_matches_full_batch_gradient() -> None:
    model, data = tiny()
    norms = group_gradient_norm(model, data, batch_size=7)
    for group, rows in (
        ("rest", np.arange(10, 30)),
        ("first10", np.arange(10)),
        ("overall", np.arange(30)),
    ):
        assert norms[group] == pytest.approx(exact(model, data, rows)[0], rel=1e-4)


def test_hutchinson_trace_within_tolerance_of_exact() -> None:
    model, data = tiny()
    est = group_hessian_trace(
        model, data, n_probes=300, seed=0, batch_size=32, include_overall=False
    )
    for group, rows in (("rest", np.arange(10, 30)), ("first10", np.arange(10))):
        true = exact(model, data, rows)[1]
        e = est[group]
        assert e.n_probes == 300
        assert abs(e.trace - true) < max(4 * e.std_error, 1e-3 * abs(true)), (group, e, true)
        assert abs(e.trace - true) / abs(true) < 0.15


def test_trace_is_seeded_and_leaves_model_alone() -> None:
    model, data = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = group_hessian_trace(model, data, n_probes=4, seed=3)
    b = group_hessian_trace(model, data, n_probes=4, seed=3)
    c = group_hessian_trace(model, data, n_probes=4, seed=4)
    assert a == b
    assert a["overall"].trace != c["overall"].trace
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError):
        group_hessian_trace(model, data, n_probes=0)


def test_predictor_rows() -> None:
    model, data = tiny()
    rows = disparate_impact_predictors(model, data, n_probes=2)
    assert [r["group"] for r in rows] == ["rest", "first10", "overall"]
    assert [r["n"] for r in rows] == [20, 10, 30]
    logits = model(torch.from_numpy(data.x)).detach()
    acc = float((logits.argmax(1).numpy() == data.y).mean())
    assert rows[-1]["accuracy"] == pytest.approx(acc)


def test_per_probe_fallback_matches_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = tiny()
    batched = group_hessian_trace(model, data, n_probes=6, seed=1, include_overall=False)
    real_grad = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("vmap cannot batch this model")
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    looped = group_hessian_trace(model, data, n_probes=6, seed=1, include_overall=False)
    for g in batched:
        assert looped[g].trace == pytest.approx(batched[g].trace, rel=1e-6)


def test_old_by_spelling_warns_and_gives_the_same_numbers() -> None:
    model, data = tiny()
    codes = np.arange(30) % 3
    with pytest.warns(DeprecationWarning, match=r"group_gradient_norm\(by=\.\.\.\)"):
        old_norm = group_gradient_norm(model, data, by=codes, batch_size=7)
    assert old_norm == group_gradient_norm(model, data, groups=codes, batch_size=7)
    with pytest.warns(DeprecationWarning, match=r"group_hessian_trace\(by=\.\.\.\)"):
        old_trace = group_hessian_trace(model, data, by=codes, n_probes=4, batch_size=7)
    assert old_trace == group_hessian_trace(model, data, groups=codes, n_probes=4, batch_size=7)
    with pytest.warns(DeprecationWarning, match=r"disparate_impact_predictors\(by=\.\.\.\)"):
        old = disparate_impact_predictors(model, data, by=codes, n_probes=4)
    new = disparate_impact_predictors(model, data, groups=codes, n_probes=4)
    assert old.to_records() == new.to_records()
    assert [r["group"] for r in new] == ["0", "1", "2", "overall"]
