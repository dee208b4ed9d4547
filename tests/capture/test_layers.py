import pytest
from torch import nn

from repsim.errors import ConfigError, LayerNotFoundError
from repsim.layers import available_layers, default_layers, select_layers
from tests.helpers import tiny_resnet


def test_available_layers_lists_dotted_paths_in_order():
    model = tiny_resnet()
    names = available_layers(model)
    assert names == [n for n, _ in model.named_modules() if n]
    assert "block1.conv2" in names
    with_inputs = available_layers(model, inputs=True)
    assert with_inputs.index("fc:input") == with_inputs.index("fc") + 1


def test_wrappers_are_unwrapped():
    model = tiny_resnet()
    assert available_layers(nn.DataParallel(model)) == available_layers(model)


def test_select_by_name_glob_type_callable():
    model = tiny_resnet()
    assert select_layers(model, "block1.conv1") == ["block1.conv1"]
    assert select_layers(model, "block?") == ["block1", "block2"]
    assert select_layers(model, "block1.*") == [
        "block1.conv1",
        "block1.bn1",
        "block1.relu1",
        "block1.conv2",
        "block1.relu2",
    ]
    assert select_layers(model, nn.BatchNorm2d) == ["block1.bn1", "block2.bn1"]
    assert select_layers(model, lambda n, m: n.endswith("conv2")) == [
        "block1.conv2",
        "block2.conv2",
    ]
    # model order, no duplicates, :input after the module's own name
    assert select_layers(model, ["fc:input", "block2", "fc", "block2"]) == [
        "block2",
        "fc",
        "fc:input",
    ]
    assert select_layers(model, "block*.conv1:input") == [
        "block1.conv1:input",
        "block2.conv1:input",
    ]


def test_default_is_leaf_modules_without_flatten():
    model = tiny_resnet()
    layers = default_layers(model)
    assert "block1" not in layers and "flatten" not in layers
    assert "block1.relu1" in layers and "fc" in layers
    assert select_layers(model, None) == layers


def test_unknown_name_lists_close_matches():
    with pytest.raises(LayerNotFoundError, match="block1.conv1"):
        select_layers(tiny_resnet(), "block1.cnv1")
    with pytest.raises(LayerNotFoundError, match="matches no module"):
        select_layers(tiny_resnet(), "layer*")
    with pytest.raises(LayerNotFoundError, match="Linear1d|no module of type"):
        select_layers(tiny_resnet(), nn.Conv1d)
    with pytest.raises(ConfigError):
        select_layers(tiny_resnet(), [3])
