import pytest
import torch

from repsim.compress import (
    GradualPruning,
    agp_schedule,
    agp_sparsity,
    gradual_prune,
    one_shot_prune,
)
from repsim.errors import ConfigError
from repsim.train import fit


def test_agp_formula_and_events():
    ev = agp_schedule(100, initial=0.1, final=0.9, start_fraction=0.2, end_fraction=0.6, n_prunes=4)
    steps = [s for s, _ in ev]
    assert steps == [20, 30, 40, 50, 60]
    for j, (step, s) in enumerate(ev):
        assert s == pytest.approx(0.9 + (0.1 - 0.9) * (1 - j / 4) ** 3)
        assert s == pytest.approx(
            agp_sparsity(step, initial=0.1, final=0.9, start=20, n=4, interval=10)
        )
    assert ev[0][1] == pytest.approx(0.1) and ev[-1][1] == pytest.approx(0.9)
    assert all(b > a for (_, a), (_, b) in zip(ev, ev[1:]))
    assert agp_sparsity(1000, initial=0.1, final=0.9, start=20, n=4, interval=10) == 0.9


@pytest.mark.parametrize(
    "kw",
    [
        dict(final=1.0),
        dict(final=0.5, initial=0.6),
        dict(final=0.5, start_fraction=0.5, end_fraction=0.5),
        dict(final=0.5, n_prunes=0),
    ],
)
def test_agp_bad_input(kw):
    final = kw.pop("final")
    with pytest.raises(ConfigError):
        GradualPruning(final, **kw)


def test_gradual_pruning_reaches_final_and_keeps_zeros(cnn, digits):
    seen = []

    class Watch:
        def on_epoch_end(self, state):
            if hasattr(state.model.fc, "weight_mask"):
                m = state.model.fc.weight_mask.bool()
                seen.append((int((~m).sum()), bool((state.model.fc.weight[~m] == 0).all())))

    model, rec, res = gradual_prune(
        cnn,
        digits.train,
        0.9,
        epochs=4,
        end_fraction=0.5,
        n_prunes=5,
        lr=3e-3,
        progress=False,
        callbacks=[Watch()],
    )
    assert rec.n_zero == round(0.9 * rec.n_total)
    assert all(ok for _, ok in seen)
    # sparsity grows, then stays fixed once the schedule is done (epochs 2 and 3)
    assert seen[0][0] < seen[-1][0] and seen[-2][0] == seen[-1][0]
    w = model.fc.weight.detach()
    assert int((w == 0).sum()) >= rec.layers["fc.weight"]["n_zero"]


def test_one_shot_finetune_keeps_mask(cnn, digits):
    model, rec, res = one_shot_prune(cnn, digits.train, 0.8, epochs=1, lr=3e-3, progress=False)
    before = model.fc.weight_mask.clone()
    fit(model, digits.train, epochs=1, progress=False)
    assert torch.equal(before, model.fc.weight_mask)
    assert (model.fc.weight[~before.bool()] == 0).all()
    no_ft, _, none = one_shot_prune(cnn, None, 0.8, epochs=0)
    assert none is None
    with pytest.raises(ConfigError, match="training data"):
        one_shot_prune(cnn, None, 0.8, epochs=1)
