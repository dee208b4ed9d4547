"""Model adapters: the output rule, builders, and save/load of any module (never pickled)."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from repsim.compress import prune
from repsim.errors import ConfigError, ModelError
from repsim.models import (
    OutputRule,
    extract_logits,
    from_builder,
    load_model,
    model_logits,
    output_rule,
    save_model,
    set_output_rule,
)
from repsim.models.adapters import import_object
from tests.models import tiny_hf


class _Out(OrderedDict):
    """Stand-in for a HF ModelOutput: a dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def test_default_rule_reads_tensor_tuple_and_logits_attribute():
    z = torch.randn(4, 3)
    assert extract_logits(z) is z
    assert extract_logits((z, torch.zeros(1))) is z
    assert extract_logits(_Out(loss=torch.zeros(()), logits=z)) is z
    assert extract_logits({"logits": z}) is z
    with pytest.raises(ModelError, match="Cannot find logits"):
        extract_logits(5)


def test_named_and_indexed_fields_and_classes():
    z = torch.randn(4, 5)
    out = (torch.zeros(4, 1), z)
    assert torch.equal(extract_logits(out, OutputRule(logits=1)), z)
    assert torch.equal(extract_logits(_Out(scores=z), OutputRule(logits="scores")), z)
    kept = extract_logits(z, OutputRule(classes=[4, 1]))
    assert torch.equal(kept, z[:, [4, 1]])
    with pytest.raises(ModelError, match="only 5 columns"):
        extract_logits(z, OutputRule(classes=[7]))
    with pytest.raises(ModelError, match="no such attribute"):
        extract_logits(_Out(a=z), OutputRule(logits="b"))
    with pytest.raises(ConfigError, match="token must be"):
        OutputRule(token="cls")


def test_token_rules_against_direct_indexing():
    torch.manual_seed(0)
    z = torch.randn(3, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    with pytest.raises(ModelError, match="declare which token"):
        extract_logits(z)
    last = extract_logits(z, OutputRule(token="last"), attention_mask=mask)
    assert torch.equal(last, torch.stack([z[0, 5], z[1, 2], z[2, 1]]))
    assert torch.equal(extract_logits(z, OutputRule(token="last")), z[:, -1])
    assert torch.equal(extract_logits(z, OutputRule(token="first")), z[:, 0])
    mean = extract_logits(z, OutputRule(token="mean"), attention_mask=mask)
    expected = torch.stack([z[0].mean(0), z[1, :3].mean(0), z[2, :2].mean(0)])
    torch.testing.assert_close(mean, expected)


def test_model_logits_passes_dicts_as_keywords_and_uses_the_mask():
    net = tiny_hf.dict_net()
    ids = torch.randint(1, tiny_hf.VOCAB, (4, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    direct = net(ids, mask)[0]
    assert torch.equal(model_logits(net, {"input_ids": ids, "attention_mask": mask}), direct)


def test_gpt2_lm_as_classifier_last_non_pad_token():
    gpt = tiny_hf.tiny_gpt2()
    set_output_rule(gpt, token="last", classes=[7, 9])
    assert output_rule(gpt) == OutputRule(token="last", classes=(7, 9))
    ids = torch.randint(6, tiny_hf.VOCAB, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 8, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        alone = gpt(input_ids=ids).logits[:, -1, [7, 9]]
        got = model_logits(gpt, {"input_ids": padded, "attention_mask": mask})
    torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-5)


def test_import_object_and_from_builder(tmp_path):
    assert import_object("tests.models.tiny_hf:dict_net") is tiny_hf.dict_net
    for bad in ("tests.models.tiny_hf", "no_such_module_x:f", "tests.models.tiny_hf:nope"):
        with pytest.raises(ModelError):
            import_object(bad)
    a = from_builder("tests.models.tiny_hf:dict_net", dim=6, seed=3)
    b = from_builder(tiny_hf.dict_net, dim=6, seed=3)
    assert a.repsim_spec == {"builder": "tests.models.tiny_hf:dict_net", "kwargs": {"dim": 6}}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ConfigError, match="JSON"):
        from_builder("tests.models.tiny_hf:dict_net", dim=(6,))

    def local():
        return nn.Linear(2, 2)

    with pytest.raises(ModelError, match="cannot be imported back"):
        from_builder(local)


def test_save_load_builder_model_keeps_rule_and_logits(tmp_path):
    net = from_builder("tests.models.tiny_hf:dict_net", dim=6, n_classes=3)
    set_output_rule(net, logits=0)
    path = save_model(net, tmp_path / "net")
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["spec"]["builder"] == "tests.models.tiny_hf:dict_net"
    assert info["output_rule"] == {"logits": 0, "token": None, "classes": None}
    back = load_model(tmp_path / "net")
    assert isinstance(back, tiny_hf.DictNet) and output_rule(back) == OutputRule(logits=0)
    x = {"input_ids": torch.randint(0, 64, (5, 7))}
    assert torch.equal(model_logits(back, x), model_logits(net, x))


def test_save_any_module_with_explicit_builder_and_clear_error(tmp_path):
    net = tiny_hf.dict_net(seed=4)
    with pytest.raises(ModelError, match="builder='package.module:function'"):
        save_model(net, tmp_path / "x")
    save_model(net, tmp_path / "x", builder="tests.models.tiny_hf:dict_net")
    back = load_model(tmp_path / "x")
    for (k, v), (k2, v2) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(ConfigError, match="builder_kwargs needs builder"):
        save_model(net, tmp_path / "y", builder_kwargs={"dim": 3})


def test_loading_never_unpickles(tmp_path):
    net = from_builder("tests.models.tiny_hf:dict_net")
    path = save_model(net, tmp_path / "m")
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte length, then a JSON header
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == set(net.state_dict())


def test_hf_bert_round_trip_identical_logits(tmp_path):
    bert = tiny_hf.tiny_bert()
    save_model(bert, tmp_path / "bert", accuracy=0.5)
    info = json.loads((tmp_path / "bert.json").read_text())
    assert info["spec"]["hf_class"].endswith(":BertForSequenceClassification")
    back = load_model(tmp_path / "bert")
    ids = torch.randint(0, 64, (3, 9))
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, bert(input_ids=ids).logits)


def test_hf_gpt2_tied_weights_pruned_round_trip(tmp_path):
    gpt = tiny_hf.tiny_gpt2()
    pruned, _ = prune(gpt, 0.5, method="2:4")
    set_output_rule(pruned, token="last")
    save_model(pruned, tmp_path / "gpt")
    info = json.loads((tmp_path / "gpt.json").read_text())
    assert info["aliases"] == {"lm_head.weight": "transformer.wte.weight"}
    back = load_model(tmp_path / "gpt")
    assert back.lm_head.weight is back.transformer.wte.weight
    assert hasattr(back.transformer.h[0].attn.c_attn, "weight_mask")
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        assert torch.equal(model_logits(back, ids), model_logits(pruned, ids))


def test_repsim_models_keep_their_format(tmp_path):
    from repsim.models import build_model

    model = build_model("mlp", input_shape=(4,), n_classes=2, seed=0)
    save_model(model, tmp_path / "mlp")
    info = json.loads((tmp_path / "mlp.json").read_text())
    assert set(info["spec"]) == {"name", "input_shape", "n_classes", "options"}
    assert "aliases" not in info and "output_rule" not in info
