import numpy as np
import pytest
import torch

from repsim.errors import ModelError
from repsim.models import build_model, load_model, save_model
from repsim.models.io import load_state_dict_pruned


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [
        ("mlp", (104,), {}),
        ("cnn", (1, 8, 8), {}),
        ("cnn", (3, 28, 28), {"width": 8}),
        ("resnet", (1, 28, 28), {"depth": 8, "width": 8}),
        ("vgg", (3, 8, 8), {}),
    ],
)
def test_models_build_and_run(name, shape, options):
    model = build_model(name, input_shape=shape, n_classes=7, seed=0, **options)
    out = model(torch.zeros(4, *shape))
    assert out.shape == (4, 7)


def test_resnet20_structure_and_last_stage_shape():
    model = build_model("resnet", input_shape=(1, 28, 28), n_classes=10, depth=20)
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 9 and blocks[-1] == "layer3.2"
    feats = {}
    model.layer3.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    model.eval()(torch.zeros(2, 1, 28, 28))
    assert feats["x"].shape == (2, 64, 7, 7)
    with pytest.raises(ModelError, match="6n\\+2"):
        build_model("resnet", input_shape=(1, 28, 28), n_classes=10, depth=21)


def test_seeded_init_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=5)
    after = torch.rand(1)
    b = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=5)
    c = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=6)
    assert torch.equal(before, after)
    for (k, va), vb, vc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb)
        if k.endswith("conv1.weight"):
            assert not torch.equal(va, vc)


def test_unknown_model_and_option():
    with pytest.raises(ModelError, match="Unknown model 'cnm'.*'cnn'"):
        build_model("cnm", input_shape=(1, 8, 8), n_classes=10)
    with pytest.raises(ModelError, match="no option 'widht'.*'width'"):
        build_model("cnn", input_shape=(1, 8, 8), n_classes=10, widht=3)


def test_save_load_round_trip_including_pruning_mask(tmp_path):
    model = build_model("mlp", input_shape=(12,), n_classes=3, seed=0, hidden=(16,))
    torch.nn.utils.prune.l1_unstructured(model.features.fc1, "weight", amount=0.5)
    path = save_model(model, tmp_path / "m")
    again = load_model(path)
    x = torch.randn(5, 12)
    assert torch.equal(model(x), again(x))
    assert int((again.features.fc1.weight == 0).sum()) == 16 * 12 // 2
    # a pruned state dict loads into a plain model too
    plain = build_model("mlp", input_shape=(12,), n_classes=3, hidden=(16,))
    load_state_dict_pruned(plain, model.state_dict())
    assert torch.equal(plain(x), model(x))
    with pytest.raises(ModelError, match="No saved model"):
        load_model(tmp_path / "missing")


def test_save_rejects_models_without_spec(tmp_path):
    with pytest.raises(ModelError, match="build_model"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x")


def test_inplace_relu_resnet_matches_manual_block():
    model = build_model("resnet", input_shape=(1, 8, 8), n_classes=2, depth=8, width=4, seed=0)
    model.eval()
    block = model.layer1[0]
    x = torch.randn(3, 4, 8, 8)
    manual = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + x)
    assert torch.allclose(block(x.clone()), manual)
    assert np.isfinite(model(torch.randn(2, 1, 8, 8)).detach().numpy()).all()
