"""Compression of transformer weights: Conv1D, Wanda, SparseGPT, N:M, group-wise RTN, GPTQ."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from repsim.compress import Mask, prune, quantize
from repsim.compress.obs import gptq_matrix, sparsegpt_matrix
from repsim.compress.prune import wanda_scores
from repsim.compress.quantize import grid, on_grid
from repsim.errors import ConfigError, DataError, PruningWarning
from repsim.models import model_logits, set_output_rule
from tests.models import tiny_hf

BLOCK_WEIGHTS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture(scope="module")
def gpt():
    return tiny_hf.tiny_gpt2()


@pytest.fixture(scope="module")
def calib():
    task = tiny_hf.token_task(n=24, seed=1)
    return {"input_ids": task["input_ids"], "attention_mask": task["attention_mask"]}


def _block_weights(model):
    out = {}
    for i, block in enumerate(model.transformer.h):
        for name in BLOCK_WEIGHTS:
            mod = block.get_submodule(name)
            out[f"transformer.h.{i}.{name}"] = mod
    return out


def _eff(module):
    if hasattr(module, "weight_orig"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _rtn_direct(rows: np.ndarray, bits: int, g: int, symmetric: bool) -> np.ndarray:
    """Group-wise round to nearest, written out with numpy loops."""
    out = np.empty_like(rows)
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], g):
            w = rows[r, start : start + g]
            if symmetric:
                qmax = 2 ** (bits - 1) - 1
                s = np.abs(w).max() / qmax if np.abs(w).max() > 0 else 1.0
                out[r, start : start + g] = np.clip(np.round(w / s), -qmax, qmax) * s
            else:
                lo, hi = min(w.min(), 0.0), max(w.max(), 0.0)
                s = (hi - lo) / (2**bits - 1) if hi > lo else 1.0
                z = np.round(-lo / s)
                out[r, start : start + g] = (np.clip(np.round(w / s) + z, 0, 2**bits - 1) - z) * s
    return out


# --------------------------------------------------------------------------- quantisation


@pytest.mark.parametrize(
    "bits, group_size, symmetric", [(4, 8, True), (3, 64, True), (8, 128, False), (4, 16, False)]
)
def test_groupwise_rtn_changes_every_block_weight_and_matches_direct(
    gpt, bits, group_size, symmetric
):
    with pytest.warns(UserWarning, match="lm_head.weight is tied"):
        q, rec = quantize(gpt, bits=bits, group_size=group_size, symmetric=symmetric)
    assert rec.group_size == group_size and rec.method == "rtn"
    dense, quant = _block_weights(gpt), _block_weights(q)
    for name, mod in dense.items():
        assert f"{name}.weight" in rec.layers
        w = mod.weight.detach().double().numpy()  # Conv1D: [in, out]
        wq = quant[name].weight.detach().double().numpy()
        assert not np.array_equal(w, wq), name
        expected = _rtn_direct(w.T.copy(), bits, group_size, symmetric).T
        np.testing.assert_allclose(wq, expected, rtol=1e-6, atol=1e-7)
        assert rec.layers[f"{name}.weight"]["max_levels"] <= 2**bits - (1 if symmetric else 0)
    # biases, embeddings and layer norms stay in float
    assert torch.equal(q.transformer.h[0].ln_1.weight, gpt.transformer.h[0].ln_1.weight)
    assert torch.equal(q.transformer.wpe.weight, gpt.transformer.wpe.weight)


def test_quantize_per_channel_of_conv1d_is_per_output_column(gpt):
    q, rec = quantize(gpt, bits=4, exclude=["lm_head"])
    w = gpt.transformer.h[0].mlp.c_fc.weight.detach().double().numpy()
    wq = q.transformer.h[0].mlp.c_fc.weight.detach().double().numpy()
    np.testing.assert_allclose(wq, _rtn_direct(w.T.copy(), 4, w.shape[0], True).T, atol=1e-7)
    assert "tied" not in rec.options


def test_quantize_rejects_bad_group_options(gpt):
    with pytest.raises(ConfigError, match="group_size"):
        quantize(gpt, bits=4, group_size=0)
    with pytest.raises(ConfigError, match="per_channel"):
        quantize(gpt, bits=4, group_size=64, per_channel=False)
    with pytest.raises(DataError, match="gptq"):
        quantize(gpt, bits=4, method="gptq")


def _correlated_linear(seed=0, d_in=16, d_out=6, n=400):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_in, d_in, generator=g)
    x = torch.randn(n, d_in, generator=g) @ mix  # strongly correlated features
    model = nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, 2))
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model, x


def _output_error(w_new, w, x):
    return float(((x.double() @ (w_new.double() - w.double()).T) ** 2).sum())


def test_gptq_beats_rtn_on_layer_output_and_stays_on_grid():
    model, x = _correlated_linear()
    w = model[0].weight.detach().clone()
    rtn, _ = quantize(model, bits=3, group_size=8, exclude=["2"])
    gq, rec = quantize(
        model, bits=3, group_size=8, method="gptq", data=x, exclude=["2"], percdamp=0.0
    )
    e_rtn = _output_error(rtn[0].weight.detach(), w, x)
    e_gptq = _output_error(gq[0].weight.detach(), w, x)
    assert e_gptq < 0.7 * e_rtn
    h = 2 * x.double().T @ x.double() / len(x)
    d = gq[0].weight.detach().double() - w.double()
    expected = float(
        torch.sqrt(
            torch.einsum("ij,jk,ik->", d, h, d)
            / torch.einsum("ij,jk,ik->", w.double(), h, w.double())
        )
    )
    assert rec.layers["0.weight"]["output_rel_error"] == pytest.approx(expected, rel=1e-6)
    assert rec.layers["0.weight"]["max_levels"] <= 7
    assert rec.method == "gptq" and rec.options["n_calibration"] == len(x)


def test_gptq_lazy_blocks_equal_column_by_column():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 24, generator=g) @ torch.randn(24, 24, generator=g)
    w = torch.randn(5, 24, generator=g, dtype=torch.float64)
    h = (2 * x.T @ x / len(x)).double()

    def fit(block):
        scale, zero = grid(block, 4)
        return lambda col: on_grid(col.unsqueeze(1), scale, zero, 4)[0].squeeze(1)

    a = gptq_matrix(w, h, fit, group_size=4, blocksize=4)
    b = gptq_matrix(w, h, fit, group_size=4, blocksize=128)
    c = gptq_matrix(w, h, fit, group_size=4, blocksize=1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_gptq_on_gpt2_keeps_pruned_zeros(gpt, calib):
    pruned, _ = prune(gpt, None, method="2:4")
    q, rec = quantize(pruned, bits=4, group_size=16, method="gptq", data=calib, exclude=["lm_head"])
    for name, mod in _block_weights(q).items():
        old = _block_weights(pruned)[name]
        assert torch.equal(mod.weight_mask, old.weight_mask)
        assert bool((_eff(mod)[~old.weight_mask.bool()] == 0).all())
        assert not torch.equal(_eff(mod), _eff(old))
        assert rec.layers[f"{name}.weight"]["max_levels"] <= 15


# --------------------------------------------------------------------------- pruning


def _wanda_direct(model, calib, names):
    """|W| * ||X_j|| from inputs captured by hand on the dense model (pad tokens dropped)."""
    modules = dict(model.named_modules())
    inputs = {}
    hooks = [
        modules[n].register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, a[0].detach()))
        for n in names
    ]
    with torch.no_grad():
        model(
            input_ids=torch.from_numpy(calib["input_ids"]),
            attention_mask=torch.from_numpy(calib["attention_mask"]),
        )
    for h in hooks:
        h.remove()
    mask = torch.from_numpy(calib["attention_mask"]).bool()
    out = {}
    for n in names:
        rows = inputs[n][mask].double()
        norm = torch.sqrt((rows**2).sum(0))
        w_rows = modules[n].weight.detach().double().T  # Conv1D [in, out] -> [out, in]
        out[n] = w_rows.abs() * norm[None, :]
    return out


def test_wanda_scores_and_masks_match_a_direct_computation(gpt, calib):
    names = list(_block_weights(gpt))
    direct = _wanda_direct(gpt, calib, names)
    pruned, rec = prune(gpt, 0.5, method="wanda", data=calib, sequential=False, batch_size=7)
    assert rec.scope == "row" and rec.options["n_calibration"] == 24
    for name, mod in _block_weights(pruned).items():
        s = direct[name]
        k = s.shape[1] // 2
        expected_keep = torch.ones_like(s, dtype=torch.bool)
        expected_keep.scatter_(1, torch.argsort(s, dim=1)[:, :k], False)
        got = mod.weight_mask.bool().T
        assert torch.equal(got, expected_keep), name
        assert rec.layers[f"{name}.weight"]["sparsity"] == 0.5
    w = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    torch.testing.assert_close(
        wanda_scores(w, torch.tensor([2.0, 4.0])),
        torch.tensor([[2.0, 8.0], [6.0, 2.0]], dtype=torch.float64),
    )


def test_wanda_sequential_first_layer_same_later_layers_see_pruned_inputs(gpt, calib):
    seq, _ = prune(gpt, 0.5, method="wanda", data=calib)
    par, _ = prune(gpt, 0.5, method="wanda", data=calib, sequential=False)
    first = "transformer.h.0.attn.c_attn"
    assert torch.equal(
        _block_weights(seq)[first].weight_mask, _block_weights(par)[first].weight_mask
    )
    later = [
        n
        for n in _block_weights(gpt)
        if not torch.equal(_block_weights(seq)[n].weight_mask, _block_weights(par)[n].weight_mask)
    ]
    assert later  # sequential calibration changes some later masks


@pytest.mark.parametrize(
    "method, kw",
    [
        ("wanda", {}),
        ("sparsegpt", {}),
        ("2:4", {}),
        ("wanda", {"pattern": "4:8"}),
        ("sparsegpt", {"pattern": "2:4"}),
        ("magnitude", {"scope": "layerwise"}),
    ],
)
def test_every_targeted_layer_hits_the_sparsity(gpt, calib, method, kw):
    sparsity = None if ":" in method or "pattern" in kw else 0.5
    pruned, rec = prune(gpt, sparsity, method=method, data=calib, **kw)
    assert set(rec.layers) == {f"{n}.weight" for n in _block_weights(gpt)}
    assert rec.excluded == ["lm_head.weight"]
    for name, mod in _block_weights(pruned).items():
        mask = mod.weight_mask.bool()
        assert float((~mask).float().mean()) == 0.5, name
        assert bool((_eff(mod)[~mask] == 0).all())
    pattern = kw.get("pattern") or (method if ":" in method else None)
    if pattern:
        n, m = map(int, pattern.split(":"))
        assert rec.scope == "n:m" and rec.options["pattern"] == pattern
        for name, mod in _block_weights(pruned).items():
            rows = mod.weight_mask.bool().T  # [out, in]: groups of m consecutive inputs
            kept = rows.reshape(rows.shape[0], -1, m).sum(2)
            assert bool((kept == n).all()), name
    ids = torch.from_numpy(calib["input_ids"])
    with torch.no_grad():
        assert torch.isfinite(pruned(input_ids=ids).logits).all()


def test_two_four_on_a_plain_linear_is_magnitude_within_groups():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 2))
    pruned, rec = prune(lin, None, method="2:4")
    w = lin[0].weight.detach().abs().reshape(3, 2, 4)
    keep = pruned[0].weight_mask.bool().reshape(3, 2, 4)
    top2 = torch.topk(w, 2, dim=2).indices
    expected = torch.zeros_like(keep).scatter_(2, top2, True)
    assert torch.equal(keep, expected)
    assert rec.method == "2:4" and rec.requested == 0.5


def test_sparsegpt_matches_least_squares_for_one_pruned_first_column():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    w = torch.randn(1, 6, generator=g, dtype=torch.float64)
    keep = torch.ones(1, 6, dtype=torch.bool)
    keep[0, 0] = False
    h = 2 * x.T @ x / len(x)
    new, mask = sparsegpt_matrix(w, h, sparsity=1 / 6, keep=keep, percdamp=0.0, blocksize=6)
    assert torch.equal(mask, keep)
    target = x @ w[0]
    sol = torch.linalg.lstsq(x[:, 1:], target.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(new[0, 1:], sol, rtol=1e-6, atol=1e-8)
    assert new[0, 0] == 0


def test_sparsegpt_lazy_blocks_equal_column_by_column_for_nm():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 16, generator=g) @ torch.randn(16, 16, generator=g)
    w = torch.randn(4, 16, generator=g)
    h = 2 * x.T @ x / len(x)
    a = sparsegpt_matrix(w, h, nm=(2, 4), blocksize=4)
    b = sparsegpt_matrix(w, h, nm=(2, 4), blocksize=128)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude():
    model, x = _correlated_linear(seed=3)
    w = model[0].weight.detach().clone()
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        kw = {"scope": "layerwise"} if method == "magnitude" else {}
        pruned, rec = prune(model, 0.5, method=method, data=x, **kw)
        assert rec.layers["0.weight"]["n_zero"] == 48
        errors[method] = _output_error(_eff(pruned[0]), w, x)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_wanda_on_conv2d_uses_unfolded_patch_norms():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(3 * 5 * 5, 2))
    x = torch.randn(4, 2, 5, 5)
    pruned, _ = prune(model, 0.5, method="wanda", data=x)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1)).double()
    norm = torch.zeros(2, 3, 3, dtype=torch.float64)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                norm[c, i, j] = torch.sqrt((xp[:, c, i : i + 5, j : j + 5] ** 2).sum())
    score = conv.weight.detach().double().abs() * norm[None]
    rows = score.reshape(3, -1)
    keep = torch.ones_like(rows, dtype=torch.bool).scatter_(1, torch.argsort(rows, 1)[:, :9], False)
    assert torch.equal(pruned[0].weight_mask.bool().reshape(3, -1), keep)


def test_activation_aware_errors(gpt, calib):
    with pytest.raises(DataError, match="calibrates on data"):
        prune(gpt, 0.5, method="wanda")
    with pytest.raises(ConfigError, match="sparsity of 0.5"):
        prune(gpt, 0.7, method="2:4")
    with pytest.raises(ConfigError, match="needs 0 < n < m"):
        prune(gpt, None, method="4:4")
    lin = nn.Sequential(nn.Linear(6, 3), nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="rows of 6 weights, not a multiple of 4"):
        prune(lin, None, method="2:4")
    conv1d = nn.Sequential(nn.Conv1d(2, 2, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="supports Linear, transformers Conv1D and Conv2d"):
        prune(conv1d, 0.5, method="wanda", data=torch.randn(3, 2, 4))
    with pytest.raises(ConfigError, match="pattern="):
        prune(gpt, None, method="random", pattern="2:4")
    with pytest.raises(ConfigError, match="scope"):
        prune(gpt, 0.5, method="sparsegpt", data=calib, scope="global")


def test_gpt2_magnitude_prune_now_targets_conv1d_and_ln_structured_removes_output_columns(gpt):
    pruned, rec = prune(gpt, 0.5)
    assert len(rec.layers) == 8 and rec.sparsity == 0.5
    s, _ = prune(gpt, 0.25, method="ln_structured", exclude=["transformer.h.1.*"])
    mask = s.transformer.h[0].mlp.c_fc.weight_mask  # [in, out]
    dead_columns = (~mask.bool()).all(0)
    assert int(dead_columns.sum()) == round(0.25 * mask.shape[1])
    assert not bool((~mask.bool()).all(1).any())
    with pytest.raises(ConfigError, match="no Linear, Conv or transformers Conv1D"):
        prune(nn.Sequential(nn.Embedding(3, 2)), 0.5)


def test_wanda_composes_with_an_existing_mask(gpt, calib):
    first, _ = prune(gpt, 0.3, scope="layerwise")
    again, rec = prune(first, 0.5, method="wanda", data=calib)
    for name, mod in _block_weights(again).items():
        old = _block_weights(first)[name].weight_mask.bool()
        assert bool((mod.weight_mask.bool() <= old).all())
    assert rec.sparsity >= 0.5
    assert Mask.from_model(again).sparsity()["sparsity"] >= 0.5


# --------------------------------------------------------------------------- collapse warning


def _mlp_with_small_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 3)
    )
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # global magnitude pruning wipes this layer out first
    return model


def test_global_pruning_that_zeroes_a_layer_warns_naming_it():
    model = _mlp_with_small_layer()
    with pytest.warns(PruningWarning, match=r"2\.weight is pruned to 100%"):
        prune(model, 0.7)
    with pytest.warns(PruningWarning, match=r"dead outputs"):
        prune(_mlp_with_small_layer(), 0.95, scope="layerwise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruningWarning)
        prune(_mlp_with_small_layer(), 0.5, scope="layerwise")
        prune(_mlp_with_small_layer(), 0.5, method="ln_structured")  # removes units on purpose


def test_gradual_pruning_collapse_warns():
    from repsim.compress import gradual_prune
    from repsim.data import as_grouped

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype(np.float32)
    data = as_grouped(x, (x[:, 0] > 0).astype(int), np.arange(64) % 2, n_classes=3)
    with pytest.warns(PruningWarning, match="pruned to 100%"):
        gradual_prune(
            _mlp_with_small_layer(), data, 0.7, epochs=1, batch_size=32, lr=1e-4, n_prunes=2
        )


def test_output_rule_survives_compression(gpt):
    set_output_rule(gpt, token="last", classes=[2, 3])
    try:
        pruned, _ = prune(gpt, 0.5)
        q, _ = quantize(gpt, bits=8, exclude=["lm_head"])
        ids = torch.randint(1, 60, (2, 5))
        for m in (pruned, q):
            assert model_logits(m, ids).shape == (2, 2)
    finally:
        del gpt.repsim_output
