import math

import numpy as np
import pytest
import torch
from torch import nn

from repsim.compress import Mask, classifier_name, prune, pruned_parameters
from repsim.errors import ConfigError, LayerNotFoundError


def _weights(model, names):
    mods = dict(model.named_modules())
    return {n: mods[n.rsplit(".", 1)[0]].weight.detach().clone() for n in names}


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_global_sparsity_exact(cnn, s, method):
    pruned, rec = prune(cnn, s, method=method)
    weights = _weights(pruned, rec.layers)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert zeros == round(s * total) == rec.n_zero
    assert rec.n_total == total
    assert "classifier.weight" in rec.excluded and "classifier.weight" not in rec.layers
    assert (pruned.classifier.weight != 0).all()


@pytest.mark.parametrize("s", [0.5, 0.9])
def test_layerwise_sparsity_per_layer(cnn, s):
    pruned, rec = prune(cnn, s, scope="layerwise")
    for name, w in _weights(pruned, rec.layers).items():
        assert abs(int((w == 0).sum()) - s * w.numel()) <= 0.5 + 1e-9, name
    assert abs(rec.sparsity - s) * rec.n_total <= 0.5 * len(rec.layers)


def test_global_magnitude_is_a_global_threshold(cnn):
    pruned, rec = prune(cnn, 0.8)
    dense = _weights(cnn, rec.layers)
    kept = _weights(pruned, rec.layers)
    # independent computation: one threshold on |w| over all pruned tensors
    allw = torch.cat([w.abs().flatten() for w in dense.values()])
    k = round(0.8 * allw.numel())
    thr = allw.sort().values[k - 1]
    for name in dense:
        removed = kept[name] == 0
        assert (dense[name].abs()[removed] <= thr).all()
        assert (dense[name].abs()[~removed] >= thr).all()
    # global differs from layer-wise: layer sparsities are unequal
    sp = [v["sparsity"] for v in rec.layers.values()]
    assert max(sp) - min(sp) > 0.05
    _, lw = prune(cnn, 0.8, scope="layerwise")
    assert all(abs(v["n_zero"] - 0.8 * v["n_total"]) <= 0.5 for v in lw.layers.values())


def test_layerwise_magnitude_keeps_largest(cnn):
    pruned, rec = prune(cnn, 0.6, scope="layerwise")
    dense = _weights(cnn, rec.layers)
    for name, w in _weights(pruned, rec.layers).items():
        removed = w == 0
        assert dense[name].abs()[removed].max() <= dense[name].abs()[~removed].min()


def test_random_is_seeded_and_not_magnitude(cnn):
    a, _ = prune(cnn, 0.5, method="random", seed=3)
    b, _ = prune(cnn, 0.5, method="random", seed=3)
    c, _ = prune(cnn, 0.5, method="random", seed=4)
    assert torch.equal(a.fc.weight_mask, b.fc.weight_mask)
    assert not torch.equal(a.fc.weight_mask, c.fc.weight_mask)
    state = torch.get_rng_state()
    prune(cnn, 0.5, method="random", seed=5)
    assert torch.equal(state, torch.get_rng_state())


def test_structured_zeroes_whole_filters(cnn):
    pruned, rec = prune(cnn, 0.5, method="ln_structured", n=2, dim=0)
    for name in rec.layers:
        mod = dict(pruned.named_modules())[name.rsplit(".", 1)[0]]
        w = mod.weight.detach()
        per_filter = w.reshape(w.shape[0], -1)
        zero_rows = (per_filter == 0).all(dim=1)
        assert int(zero_rows.sum()) == round(0.5 * w.shape[0])
        # every zero is inside a fully zeroed filter
        assert int((per_filter == 0).sum()) == int(zero_rows.sum()) * per_filter.shape[1]
        # the removed filters have the smallest L2 norms
        dense = dict(cnn.named_modules())[name.rsplit(".", 1)[0]].weight.detach()
        norms = dense.reshape(dense.shape[0], -1).norm(dim=1)
        assert norms[zero_rows].max() <= norms[~zero_rows].min()


def test_structured_global_scope_rejected(cnn):
    with pytest.raises(ConfigError, match="layer-wise"):
        prune(cnn, 0.5, method="ln_structured", scope="global")


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_composition_reaches_total(cnn, scope):
    once, _ = prune(cnn, 0.5, scope=scope)
    twice, rec = prune(once, 0.9, scope=scope)
    direct, rec_d = prune(cnn, 0.9, scope=scope)
    assert rec.n_zero == rec_d.n_zero
    if scope == "layerwise":  # magnitude ranking inside each layer is the same either way
        assert torch.equal(twice.fc.weight_mask, direct.fc.weight_mask)
    assert pruned_parameters(twice) == pruned_parameters(direct)
    with pytest.raises(ConfigError, match="cannot be undone"):
        prune(twice, 0.5, scope=scope)


def test_structured_composes(cnn):
    once, _ = prune(cnn, 0.25, method="ln_structured")
    twice, rec = prune(once, 0.5, method="ln_structured")
    w = twice.features.conv2.weight.detach().reshape(32, -1)
    assert int((w == 0).all(dim=1).sum()) == 16


def test_input_model_untouched_and_inplace(cnn):
    before = cnn.fc.weight.detach().clone()
    prune(cnn, 0.9)
    assert torch.equal(cnn.fc.weight, before) and not pruned_parameters(cnn)
    out, _ = prune(cnn, 0.5, inplace=True)
    assert out is cnn and pruned_parameters(cnn)


def test_classifier_is_last_linear(cnn, mlp):
    assert classifier_name(cnn) == "classifier"
    assert classifier_name(mlp) == "classifier"
    _, rec = prune(cnn, 0.5, exclude_classifier=False)
    assert "classifier.weight" in rec.layers


def test_exclude_names_and_globs(cnn):
    _, rec = prune(cnn, 0.5, exclude=["features.conv[12]", "fc.weight"])
    assert set(rec.excluded) == {
        "features.conv1.weight",
        "features.conv2.weight",
        "fc.weight",
        "classifier.weight",
    }
    assert list(rec.layers) == ["features.conv3.weight"]
    with pytest.raises(ConfigError, match="Nothing left"):
        prune(cnn, 0.5, exclude=["*"])


def test_exclude_unknown_name(cnn):
    with pytest.raises(LayerNotFoundError, match="features.conv1"):
        prune(cnn, 0.5, exclude=["features.conv_1"])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, "a"])
def test_bad_sparsity(cnn, bad):
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        prune(cnn, bad)


def test_bad_method_and_scope(cnn):
    with pytest.raises(ConfigError, match="magnitude"):
        prune(cnn, 0.5, method="magnitud")
    with pytest.raises(ConfigError, match="scope"):
        prune(cnn, 0.5, scope="local")


def test_pruned_forward_matches_masked_dense(cnn):
    pruned, _ = prune(cnn, 0.7)
    mask = Mask.from_model(pruned)
    ref = type(cnn)((1, 8, 8), 10)
    ref.load_state_dict(cnn.state_dict())
    with torch.no_grad():
        for name, m in mask.items():
            mod = dict(ref.named_modules())[name.rsplit(".", 1)[0]]
            mod.weight.mul_(m.float())
    x = torch.from_numpy(np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
    cnn.eval(), pruned.eval(), ref.eval()
    assert torch.allclose(pruned(x), ref(x))


def test_bias_and_batchnorm_not_pruned(cnn):
    pruned, _ = prune(cnn, 0.9)
    names = [n for n, _ in pruned.named_buffers() if n.endswith("_mask")]
    assert all(n.endswith("weight_mask") for n in names)
    assert not any(
        isinstance(dict(pruned.named_modules())[n.rsplit(".", 1)[0]], nn.BatchNorm2d) for n in names
    )


def test_one_prunable_parameters_with_its_views(cnn):
    from repsim.compress import PrunableParameters, prunable_parameters

    sel = prunable_parameters(cnn, exclude=["features.conv1"])
    assert isinstance(sel, PrunableParameters)
    targets, excluded = sel  # unpacks as the (targets, excluded) pair it always was
    assert [n for n, _ in targets] == ["features.conv2", "features.conv3", "fc"]
    assert excluded == ["features.conv1.weight", "classifier.weight"]
    assert sel.names == ["features.conv2.weight", "features.conv3.weight", "fc.weight"]
    assert all(w is m.weight for w, (_, m) in zip(sel.weights.values(), targets, strict=True))
    pruned, _ = prune(cnn, 0.5)
    assert prunable_parameters(pruned).names == pruned_parameters(pruned)


def test_prune_and_fairgrape_share_helpers_without_an_import_cycle():
    import ast
    import importlib
    from pathlib import Path

    prune_module = importlib.import_module("repsim.compress.prune")
    prunable = importlib.import_module("repsim.compress.prunable")
    fairgrape = importlib.import_module("repsim.compress.fairgrape")
    for name in ("PruneRecord", "check_sparsity", "clone_model", "prunable_parameters"):
        assert getattr(prune_module, name) is getattr(prunable, name)
    # fairgrape (which prune calls for method="fairgrape") and the shared helpers never import
    # prune, so there is no cycle
    for module in (fairgrape, prunable):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "repsim.compress.prune" not in imported
