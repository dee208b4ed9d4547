import numpy as np
import pytest
import torch

from repsim.compress import prune, quantize, quantize_tensor, torch_int8_dynamic
from repsim.errors import ConfigError, DataError

X = torch.from_numpy(np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_levels_per_channel(cnn, bits):
    q, rec = quantize(cnn, bits)
    for name, mod in q.named_modules():
        if hasattr(mod, "weight") and mod.weight is not None and mod.weight.ndim >= 2:
            w = mod.weight.detach().reshape(mod.weight.shape[0], -1)
            for row in w:
                assert torch.unique(row).numel() <= 2**bits - 1
            assert rec.layers[f"{name}.weight"]["max_levels"] <= 2**bits - 1
    # names unchanged (hookable)
    assert [n for n, _ in q.named_modules()] == [n for n, _ in cnn.named_modules()]


def test_formula_independent(cnn):
    w = cnn.fc.weight.detach().double()
    bits = 4
    qmax = 2 ** (bits - 1) - 1
    expected = torch.empty_like(w)
    for c in range(w.shape[0]):
        s = w[c].abs().max() / qmax
        expected[c] = torch.clamp(torch.round(w[c] / s), -qmax, qmax) * s
    got, q, scale = quantize_tensor(cnn.fc.weight.detach(), bits)
    assert torch.allclose(got.double(), expected, atol=1e-7)
    assert q.abs().max() <= qmax
    # max |w| of each channel is representable exactly
    assert torch.allclose(got.abs().amax(1), cnn.fc.weight.detach().abs().amax(1))


def test_per_tensor(cnn):
    got, _, scale = quantize_tensor(cnn.fc.weight.detach(), 3, per_channel=False)
    assert scale.ndim == 0 and torch.unique(got).numel() <= 7


def test_error_shrinks_with_bits(cnn):
    errs = [quantize(cnn, b)[1].layers["fc.weight"]["mse"] for b in (2, 4, 8)]
    assert errs[0] > errs[1] > errs[2] > 0


def test_all_zero_channel():
    w = torch.zeros(2, 3)
    w[1] = torch.tensor([1.0, -0.5, 0.25])
    got, q, scale = quantize_tensor(w, 8)
    assert torch.equal(got[0], torch.zeros(3)) and torch.isfinite(scale).all()


def test_pruned_zeros_stay_zero(cnn):
    pruned, _ = prune(cnn, 0.8)
    q, _ = quantize(pruned, 4)
    mask = q.fc.weight_mask.bool()
    assert (q.fc.weight[~mask] == 0).all()
    assert int((q.fc.weight == 0).sum()) >= int((~mask).sum())


@pytest.mark.parametrize("bad", [1, 9, 0, 4.0, "8", True])
def test_bad_bits(cnn, bad):
    with pytest.raises(ConfigError, match="2 to 8"):
        quantize(cnn, bad)


def test_int8_matches_torch_ao(mlp):
    qsim, _ = quantize(mlp, 8)
    qtorch = torch_int8_dynamic(mlp)
    for name in ("features.fc1", "features.fc2", "classifier"):
        packed = dict(qtorch.named_modules())[name].weight()
        ints = packed.int_repr()
        _, q, scale = quantize_tensor(dict(mlp.named_modules())[name].weight.detach(), 8)
        assert torch.allclose(packed.q_per_channel_scales().float(), scale, rtol=1e-6)
        assert torch.equal(ints, q)
    mlp.eval(), qsim.eval()
    with torch.no_grad():
        a, b = qsim(X), qtorch(X)
    # torch also quantises activations dynamically: close, not equal
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item())


def test_activation_quantisation(cnn):
    q, rec = quantize(cnn, 8, activations=True, calibration=X)
    assert set(rec.activations) == {
        "features.conv1",
        "features.conv2",
        "features.conv3",
        "fc",
        "classifier",
    }
    outs = {}
    q.fc.register_forward_hook(lambda m, i, o: outs.setdefault("fc", o))
    q.eval()
    with torch.no_grad():
        q(X)
    scale = rec.activations["fc"] / 127
    assert torch.unique(torch.round(outs["fc"] / scale)).numel() <= 255
    assert torch.allclose(outs["fc"] / scale, torch.round(outs["fc"] / scale), atol=1e-3)
    with pytest.raises(DataError, match="calibration"):
        quantize(cnn, 8, activations=True)
