"""Studies on your own model and data: import paths, .npz files, weights; never unpickled."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from repsim.errors import ConfigError, DataError, ModelError
from repsim.pipeline.config import (
    dataset_from_config,
    load_config,
    load_data_source,
    model_from_config,
)
from tests.pipeline.user_models import arrays, make_mlp

USER = """
[study]
name = "user"
seeds = [0, 1]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
path = "{npz}"

[model]
name = "tests.pipeline.user_models:make_mlp"
hidden = 12

[train]
epochs = 3
batch_size = 64
lr = 0.01

[compression]
methods = ["magnitude"]
sparsities = [0.5]
recovery = ["none"]
controls = []
bits = [4]

[capture]
layers = ["fc1", "act", "fc2"]
reduction = "flatten"

[similarity]
measures = ["cka"]

[fairness]
eps = 0.01
min_group_size = 5

[report]
n_boot = 20
n_permutations = 20
"""


def _npz(tmp: Path, name: str = "task.npz", **extra: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **{**arrays(), **extra})
    return path


def _write(tmp: Path, text: str = USER, **fmt: object) -> Path:
    values = {"out": tmp / "reports", "cache": tmp / "cache", "npz": tmp / "task.npz", **fmt}
    path = tmp / "study.toml"
    path.write_text(text.format(**values))
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    from repsim.pipeline.study import run_study

    tmp = tmp_path_factory.mktemp("user")
    _npz(tmp)
    cfg = _write(tmp)
    out = run_study(cfg, progress=False)
    first = json.loads((out / "results.json").read_text())
    second = json.loads((run_study(cfg, progress=False) / "results.json").read_text())
    return tmp, cfg, out, first, second


def test_user_model_and_npz_study_runs_end_to_end(user_run):
    tmp, cfg, out, first, second = user_run
    assert first["work"]["dense_trained"] == 2
    assert first["work"]["compressed_built"] == 4  # magnitude@0.5 and 4-bit, per seed
    assert second["work"]["dense_trained"] == 0 and second["work"]["captures"] == 0
    assert first["config"]["data"]["name"] == "npz"
    assert len(first["config"]["data"]["sha256"]) == 64
    with open(out / "shifts.csv") as fh:
        methods = {row["method"] for row in csv.DictReader(fh)}
    assert methods == {"magnitude", "quantize-4bit"}
    with open(out / "similarity.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["layer"] for r in rows} == {"fc1", "act", "fc2"}
    assert {r["group"] for r in rows} >= {"a", "b"}
    assert all(d["test_accuracy"] > 0.6 for d in first["dense"])


def test_dense_models_are_saved_by_builder_and_reload(user_run):
    from repsim.models import load_model

    tmp, cfg, *_ = user_run
    saved = sorted((tmp / "cache" / "models").glob("*/dense/seed0.safetensors"))
    assert len(saved) == 1
    info = json.loads(saved[0].with_suffix(".json").read_text())
    assert info["spec"]["builder"] == "tests.pipeline.user_models:make_mlp"
    assert info["spec"]["kwargs"] == {"hidden": 12, "n_classes": 2, "input_shape": [6]}
    model = load_model(saved[0])
    data = dataset_from_config(load_config(cfg))
    x = torch.as_tensor(data.test.x)
    rebuilt = model_from_config(load_config(cfg), data, seed=0)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_changing_the_file_changes_the_model_cache(user_run, tmp_path):
    tmp, cfg, *_ = user_run
    config = load_config(cfg)
    _npz(tmp_path, seed=np.arange(3))  # an extra array: refused
    bad = _write(tmp_path, npz=tmp_path / "task.npz")
    with pytest.raises(ConfigError, match="unknown arrays"):
        dataset_from_config(load_config(bad))
    # a pinned hash that no longer matches is refused
    text = cfg.read_text().replace("[data]\n", f'[data]\nsha256 = "{"0" * 64}"\n')
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(text)
    with pytest.raises(ConfigError, match="the file changed"):
        load_config(pinned)
    assert config["data"]["sha256"] != "0" * 64


def test_npz_layouts(tmp_path):
    a = arrays(n=40)
    split = np.array(["train"] * 30 + ["test"] * 6 + ["val"] * 4)
    path = tmp_path / "s.npz"
    np.savez(path, **a, split=split, class_names=np.array(["neg", "pos"]))
    ds = load_data_source("npz", {"path": str(path)})
    assert (len(ds.train), len(ds.test), len(ds.val)) == (30, 6, 4)
    assert ds.train.class_names == ("neg", "pos") and ds.test.group_names == ("a", "b")
    # dict inputs as x.<key> arrays
    ids = np.arange(40 * 5).reshape(40, 5) % 7
    np.savez(
        path,
        **{"x.input_ids": ids, "x.attention_mask": np.ones_like(ids)},
        y=a["y"],
        groups=a["groups"],
    )
    ds = load_data_source("npz", {"path": str(path), "test_fraction": 0.5})
    assert ds.train.input_keys == ("input_ids", "attention_mask")
    assert ds.train.x["input_ids"].dtype.kind == "i"
    assert abs(len(ds.test) - 20) <= 2  # stratified by (group, class)
    assert set(ds.test.group_names) == {"a", "b"} and (np.bincount(ds.test.groups) > 0).all()
    # pickled objects are refused, never loaded
    np.savez(path, x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3), groups=np.zeros(3))
    with pytest.raises(DataError, match="pickled"):
        load_data_source("npz", {"path": str(path)})
    np.savez(path, x=a["x"], y=a["y"])
    with pytest.raises(DataError, match="groups"):
        load_data_source("npz", {"path": str(path)})


def test_dataset_functions_by_import_path():
    ds = load_data_source("tests.pipeline.user_models:load_task", {"n": 80, "split_seed": 3})
    assert len(ds.train) + len(ds.test) == 80 and ds.train.group_names == ("a", "b")
    again = load_data_source("tests.pipeline.user_models:load_task", {"n": 80, "split_seed": 3})
    np.testing.assert_array_equal(ds.test.sample_id, again.test.sample_id)
    splits = load_data_source("tests.pipeline.user_models:load_splits", {"n": 60})
    assert (len(splits.train), len(splits.test)) == (30, 30)
    assert splits.train.group_names == splits.test.group_names == ("a", "b")


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ('[data]\nname = "tests.pipeline.user_models:nope"', "no attribute 'nope'"),
        ('[data]\nname = "no_such_pkg.mod:fn"', "Cannot import module"),
        ('[data]\nname = "tests.pipeline.user_models:load_task"\nsize = 3', "data.size"),
        ('[data]\npath = "{tmp}/missing.npz"', "does not exist"),
        ('[data]\nname = "digits"\npath = "{tmp}/task.npz"', "keep one"),
        ('[data]\npath = "{tmp}/task.npz"\nrho = 0.3', "data.rho"),
        ("[data]\ngroups = 'class'", "data.name"),
    ],
)
def test_bad_data_sections_name_the_key(tmp_path, section, match):
    _npz(tmp_path)
    text = USER.replace('[data]\npath = "{npz}"', section.replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ('name = "tests.pipeline.user_models:make_mlp"\nhiden = 3', "model.hiden"),
        ('name = "tests.pipeline.user_models:UserMLPX"', "UserMLPX"),
        ('name = "tests.pipeline.user_models:make_mlp"\nweights = "{tmp}/w.pt"', "never loads"),
        (
            'name = "tests.pipeline.user_models:make_mlp"\nweights = "{tmp}/none.safetensors"',
            "does not exist",
        ),
    ],
)
def test_bad_model_sections_name_the_key(tmp_path, section, match):
    _npz(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"not read")
    text = USER.replace(
        'name = "tests.pipeline.user_models:make_mlp"\nhidden = 12',
        section.replace("{tmp}", str(tmp_path)),
    )
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_weights_are_loaded_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    _npz(tmp_path)
    torch.manual_seed(5)
    source = make_mlp([6], 2, hidden=12)
    save_file(source.state_dict(), str(tmp_path / "init.safetensors"))
    text = USER.replace("hidden = 12", f'hidden = 12\nweights = "{tmp_path}/init.safetensors"')
    config = load_config(_write(tmp_path, text))
    assert len(config["model"]["weights_sha256"]) == 64
    data = dataset_from_config(config)
    model = model_from_config(config, data, seed=0)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a directory as save_pretrained writes it works too; weights of another shape do not
    (tmp_path / "ckpt").mkdir()
    save_file(source.state_dict(), str(tmp_path / "ckpt" / "model.safetensors"))
    text2 = USER.replace("hidden = 12", f'hidden = 12\nweights = "{tmp_path}/ckpt"')
    assert load_config(_write(tmp_path, text2))["model"]["weights"].endswith("ckpt")
    save_file(make_mlp([6], 2, hidden=5).state_dict(), str(tmp_path / "bad.safetensors"))
    text3 = USER.replace("hidden = 12", f'hidden = 12\nweights = "{tmp_path}/bad.safetensors"')
    config3 = load_config(_write(tmp_path, text3))
    with pytest.raises(ModelError, match="do not fit"):
        model_from_config(config3, dataset_from_config(config3), seed=0)


TOKENS = """
[study]
name = "tokens"
seeds = [0, 1]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
path = "{npz}"
test_fraction = 0.4

[model]
name = "tests.models.tiny_hf:dict_net"
dim = 8

[train]
epochs = 2
batch_size = 32
lr = 0.01

[compression]
methods = ["magnitude", "2:4"]
sparsities = [0.5]
recovery = ["none"]
controls = []
bits = [4]

[capture]
layers = ["emb", "hidden"]
reduction = ["cls", "mean_tokens"]

[similarity]
measures = ["cka"]
by_group = false
heatmaps = false

[report]
n_boot = 10
n_permutations = 10
"""


def test_token_study_with_two_reductions(tmp_path):
    from repsim.pipeline.study import run_study
    from tests.models.tiny_hf import token_task

    t = token_task(n=80)
    np.savez(
        tmp_path / "task.npz",
        **{"x.input_ids": t["input_ids"], "x.attention_mask": t["attention_mask"]},
        y=t["label"],
        groups=t["group"],
    )
    out = run_study(_write(tmp_path, TOKENS), progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["layers"] == ["emb@cls", "hidden@cls", "emb@mean_tokens", "hidden@mean_tokens"]
    with open(out / "similarity.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} >= {"magnitude", "2:4", "quantize-4bit"}
    assert {r["layer"] for r in rows} == set(results["layers"])
    # 'hidden' is 2-D: its cls and mean_tokens rows are the same numbers
    by = {(r["method"], r["seed"], r["layer"]): float(r["value"]) for r in rows}
    for (m, s, layer), v in by.items():
        if layer == "hidden@cls":
            assert v == pytest.approx(by[(m, s, "hidden@mean_tokens")])
    # emb differs between cls (one token) and mean_tokens
    assert any(
        by[(m, s, "emb@cls")] != pytest.approx(by[(m, s, "emb@mean_tokens")])
        for (m, s, layer) in by
        if layer == "emb@cls"
    )


def test_cli_takes_user_models_and_npz_data(tmp_path, capsys):
    """Saved user models (rebuilt by import path) compared and pruned on an .npz dataset."""
    from repsim.cli import main
    from repsim.models import from_builder, load_model, save_model

    npz = _npz(tmp_path)
    for seed in (0, 1):
        net = from_builder(
            "tests.pipeline.user_models:make_mlp", seed=seed, input_shape=[6], n_classes=2
        )
        save_model(net, tmp_path / f"m{seed}")
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path / "m0"), str(tmp_path / "m1"), "--data", str(npz)]
    assert main([*args, "--out", str(out), "--n-boot", "0", "--layers", "fc1", "fc2"]) == 0
    with open(out / "similarity.csv") as fh:
        assert {r["layer"] for r in csv.DictReader(fh)} == {"fc1", "fc2"}
    pruned = tmp_path / "pruned"
    prune = ["prune", str(tmp_path / "m0"), "--sparsity", "0.5", "--method", "wanda"]
    assert main([*prune, "--data", str(npz), "--out", str(pruned)]) == 0
    model = load_model(pruned)
    assert float((model.fc1.weight == 0).float().mean()) == pytest.approx(0.5)
    capsys.readouterr()


def test_a_pretrained_checkpoint_on_disk_by_import_path(tmp_path):
    """``from_pretrained(local_dir)`` named in [model]: offline, saved and rebuilt by that path."""
    pytest.importorskip("transformers")
    from repsim.models import load_model, save_model
    from tests.models.tiny_hf import VOCAB, tiny_bert, token_task

    ckpt = tmp_path / "bert-ckpt"
    source = tiny_bert(num_labels=2, seed=7)
    source.save_pretrained(ckpt)
    t = token_task(n=40)
    np.savez(
        tmp_path / "task.npz",
        **{"x.input_ids": t["input_ids"], "x.attention_mask": t["attention_mask"]},
        y=t["label"],
        groups=t["group"],
    )
    text = USER.replace(
        'name = "tests.pipeline.user_models:make_mlp"\nhidden = 12',
        'name = "transformers:BertForSequenceClassification.from_pretrained"\n'
        f'pretrained_model_name_or_path = "{ckpt}"\nlocal_files_only = true',
    )
    config = load_config(_write(tmp_path, text))
    data = dataset_from_config(config)
    model = model_from_config(config, data, seed=0).eval()
    batch = {
        k: torch.as_tensor(v[:8]) for k, v in t.items() if k in ("input_ids", "attention_mask")
    }
    with torch.no_grad():
        want = source.eval()(**batch).logits
        assert torch.equal(model(**batch).logits, want)
    save_model(model, tmp_path / "saved")
    info = json.loads((tmp_path / "saved.json").read_text())
    assert info["spec"]["builder"].endswith("from_pretrained")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "saved").eval()(**batch).logits, want)
    assert model.config.vocab_size == VOCAB


def test_the_shipped_transformer_study_validates():
    """The shipped transformer study's config and plan (no training)."""
    pytest.importorskip("transformers")
    from repsim.pipeline.study import load_study, plan_study

    config = load_study("spurious_text_bert", {"data.n_train": 200, "data.n_test": 100})
    plan = plan_study(config)
    assert plan.bits == [4]
    # the random-pruning control (no recovery to control for: recovery is "none")
    assert [c[0] for c in plan.configs] == ["magnitude", "wanda", "2:4", "random"]
    assert "bert.encoder.layer.1@mean_tokens" in plan.layers
    assert "bert.encoder.layer.0.attention.self@cls" in plan.layers
    assert plan.n_members == 5 * len(plan.seeds) and len(plan.seeds) >= 5
