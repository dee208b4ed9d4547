import importlib
import json

import pytest
import torch

import repsim.pipeline.family
from repsim.compress import Mask
from repsim.errors import ConfigError
from repsim.pipeline.family import build, family_config, plan
from repsim.train import evaluate


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config(tmp):
    return {
        "family": {
            "name": "tiny",
            "dataset": "digits-imbalanced",
            "model": "mlp",
            "model_options": {"hidden": [32]},
            "seeds": [0, 1],
            "cache_dir": str(tmp),
            "train": {"epochs": 2},
            "compression": [
                {
                    "method": "magnitude",
                    "sparsities": [0.5, 0.9],
                    "kd": [False, True],
                    "finetune_epochs": 1,
                },
                {
                    "method": "random",
                    "sparsities": [0.5],
                    "schedule": "agp",
                    "kd": True,
                    "finetune_epochs": 1,
                    "agp": {"n_prunes": 3},
                },
                {"method": "quantize", "bits": [4]},
            ],
        }
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fam")
    return tmp, build(_config(tmp), progress=False)


def test_members_and_files(built):
    _, fam = built
    assert len(fam) == 2 + 2 * (4 + 1 + 1)
    assert fam.n_built == len(fam)
    for m in fam:
        assert m.path.is_file() and m.path.with_suffix(".json").is_file()
        assert (m.mask_path is None) == (m.method in ("dense", "quantize"))
        if m.mask_path is not None:
            assert m.mask_path.is_file()
    assert {m.seed for m in fam.select(method="magnitude", sparsity=0.9, kd=True)} == {0, 1}


def test_members_reload_and_keep_sparsity(built):
    tmp, fam = built
    ds = repsim.pipeline.family.load_dataset("digits-imbalanced")
    for m in fam.select(method="magnitude", sparsity=0.9):
        model = m.load()
        mask = m.mask()
        assert mask.sparsity()["sparsity"] == pytest.approx(0.9, abs=1e-3)
        assert torch.equal(model.features.fc1.weight_mask.bool(), mask["features.fc1.weight"])
        assert evaluate(model, ds.test).accuracy == pytest.approx(m.test_accuracy)
        parent = json.loads(m.path.with_suffix(".json").read_text())["parent"]
        assert parent == fam.dense(m.seed).fingerprint
    agp = fam.select(method="random")[0]
    assert agp.mask().sparsity()["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_compressed_derives_from_dense_of_same_seed(built):
    _, fam = built
    d0, d1 = fam.dense(0).load(), fam.dense(1).load()
    q0 = fam.select(method="quantize", seed=0)[0].load()
    w0, w1, wq = (m.features.fc1.weight.detach() for m in (d0, d1, q0))
    assert (wq - w0).abs().max() < (wq - w1).abs().max()
    assert (wq - w0).abs().max() <= w0.abs().max() / 7 / 2 + 1e-6  # half a 4-bit step


def test_second_build_does_no_work(built, monkeypatch):
    tmp, fam = built
    mtimes = {m.path: m.path.stat().st_mtime_ns for m in fam}

    def boom(*a, **k):
        raise AssertionError("training was called on a cached family")

    modules = ["repsim.pipeline.family", "repsim.compress.schedule", "repsim.compress.distill"]
    for mod in map(importlib.import_module, modules):
        monkeypatch.setattr(mod, "fit", boom)
    monkeypatch.setattr(repsim.pipeline.family, "build_model_source", boom)
    again = build(_config(tmp), progress=False)
    assert again.n_built == 0
    assert [m.fingerprint for m in again] == [m.fingerprint for m in fam]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_new_setting_builds_only_itself(built):
    tmp, fam = built
    cfg = _config(tmp)
    cfg["family"]["compression"][0]["sparsities"] = [0.5, 0.9, 0.8]
    again = build(cfg, progress=False)
    made = {(m.method, m.setting.sparsity, m.setting.kd) for m in again if m.built}
    assert made == {("magnitude", 0.8, False), ("magnitude", 0.8, True)}
    assert again.n_built == 4


def test_plan_from_toml(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(
        f'[family]\ndataset = "digits"\nmodel = "cnn"\nseeds = 3\ncache_dir = "{tmp_path}"\n'
        '[[family.compression]]\nmethod = "ln_structured"\nsparsities = [0.5]\n'
    )
    fam = plan(path)
    assert len(fam) == 6 and fam.n_built == 0
    assert [m.seed for m in fam.select(method="dense")] == [0, 1, 2]


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"sparsites": [0.5]}, r"family.compression\[0\].sparsites"),
        ({"sparsities": [1.0]}, r"sparsities.*\[0, 1\)"),
        ({"method": "quantize", "sparsities": None, "bits": [1]}, "2 to 8"),
        ({"method": "quantize", "sparsities": None, "bits": [8], "kd": True}, "kd"),
        ({"method": "prune"}, "method"),
        ({"schedule": "linear"}, "schedule"),
        ({"kd": True, "finetune_epochs": 0}, "finetune_epochs"),
    ],
)
def test_bad_compression_config(tmp_path, patch, match):
    cfg = _config(tmp_path)
    comp = cfg["family"]["compression"][0]
    comp.update(patch)
    comp = {k: v for k, v in comp.items() if v is not None}
    cfg["family"]["compression"] = [comp]
    with pytest.raises(ConfigError, match=match):
        family_config(cfg)


def test_bad_top_level_config(tmp_path):
    cfg = _config(tmp_path)["family"]
    with pytest.raises(ConfigError, match="family.modle"):
        family_config({**cfg, "modle": "cnn"})
    with pytest.raises(ConfigError, match="family.model"):
        family_config({k: v for k, v in cfg.items() if k != "model"})
    with pytest.raises(ConfigError, match="seeds"):
        family_config({**cfg, "seeds": [0, 0]})
    with pytest.raises(ConfigError, match="family.train.epoch"):
        family_config({**cfg, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="No config file"):
        family_config(tmp_path / "missing.toml")


def test_member_mask_is_the_saved_models_mask(built):
    _, fam = built
    pruned = [m for m in fam if m.method not in ("dense", "quantize")]
    assert pruned and all(m.mask() is None for m in fam if m not in pruned)
    for m in pruned:
        mask, model = m.mask(), m.load()
        assert isinstance(mask, Mask) and mask.fingerprint == m.fingerprint
        live = Mask.from_model(model)
        assert list(mask) == list(live), m.setting.key
        for name, keep in mask.items():
            assert torch.equal(keep, live[name]), (m.setting.key, name)
        assert mask.sparsity()["sparsity"] == pytest.approx(m.setting.sparsity, abs=1e-3)


def test_patience_stops_dense_training_on_the_val_split(tmp_path):
    from repsim.data import load_dataset
    from repsim.models import build_model
    from repsim.train import fit

    spec = {
        "name": "es",
        "dataset": "digits-colour",
        "model": "mlp",
        "model_options": {"hidden": [16]},
        "seeds": [0],
        "cache_dir": str(tmp_path),
        "train": {"epochs": 40, "lr": 3e-3, "patience": 1},
    }
    member = build(spec).dense(0)
    # the same early-stopped fit by hand gives the same weights
    ds = load_dataset("digits-colour")
    model = build_model("mlp", input_shape=ds.train.input_shape, n_classes=10, seed=0, hidden=[16])
    fit(model, ds.train, val=ds.val, epochs=40, lr=3e-3, patience=1, seed=0, progress=False)
    loaded = member.load()
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), loaded.state_dict()[k]), k
    no_val = {**spec, "dataset": "digits", "cache_dir": str(tmp_path / "b")}
    with pytest.raises(ConfigError, match="validation split"):
        build(no_val)


def _controls_config(tmp, **extra):
    return {
        "family": {
            "name": "ctl",
            "dataset": "digits-imbalanced",
            "model": "mlp",
            "model_options": {"hidden": [16]},
            "seeds": [0, 1],
            "cache_dir": str(tmp),
            "train": {"epochs": 1},
            "compression": [
                {
                    "method": "magnitude",
                    "sparsities": [0.5, 0.8],
                    "kd": [False, True],
                    "finetune_epochs": 1,
                    "controls": ["recovery", "random"],
                    **extra,
                },
                {
                    "method": "ln_structured",
                    "sparsities": [0.5],
                    "kd": [False],
                    "finetune_epochs": 1,
                    "controls": ["recovery"],
                },
            ],
        }
    }


def test_controls_plan_recovery_only_and_random_members(tmp_path):
    fam = plan(_controls_config(tmp_path))
    keys = {(m.method, m.setting.sparsity, m.setting.kd) for m in fam}
    # recovery-only control: sparsity 0 with each recovery of the setting, no mask
    assert ("none", 0.0, False) in keys and ("none", 0.0, True) in keys
    # random control at every sparsity and recovery of the magnitude setting
    for sp in (0.5, 0.8):
        for kd in (False, True):
            assert ("random", sp, kd) in keys
    # the ln_structured setting shares the magnitude setting's ft recovery-only population
    none_ft = fam.select(method="none", kd=False)
    assert len(none_ft) == 2 and all(m.mask_path is None for m in none_ft)
    assert len(fam.members) == len({(m.setting.key, m.seed) for m in fam.members})


def test_recovery_only_control_is_the_recipe_without_pruning(tmp_path):
    cfg = _controls_config(tmp_path)
    cfg["family"]["compression"] = cfg["family"]["compression"][:1]
    cfg["family"]["compression"][0].update(sparsities=[0.5], kd=[False], controls=["recovery"])
    fam = build(cfg, progress=False)
    dense = fam.dense(0).load()
    ctl = fam.select(method="none", seed=0)[0]
    model = ctl.load()
    # nothing removed (no exact zero added) but the weights moved: it was fine-tuned
    for (name, p), q in zip(dense.named_parameters(), model.parameters(), strict=True):
        assert int((q == 0).sum()) == int((p == 0).sum()), name
    assert any(
        not torch.equal(p, q) for p, q in zip(dense.parameters(), model.parameters(), strict=True)
    )
    # same recipe as the pruned member's: a pruned copy fine-tuned alike reproduces the member
    pruned = fam.select(method="magnitude", seed=0)[0]
    assert pruned.mask() is not None and ctl.mask() is None
    # a second build makes nothing
    assert build(cfg, progress=False).n_built == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "quantize", "bits": [4], "sparsities": None, "kd": False}, "quantize"),
        ({"finetune_epochs": 0, "kd": False}, "no recovery"),
        ({"controls": ["recovery", "randum"]}, "random"),
    ],
)
def test_controls_config_errors(tmp_path, change, message):
    cfg = _controls_config(tmp_path)
    cfg["family"]["compression"][0].update(change)
    with pytest.raises(ConfigError, match=message):
        family_config(cfg)


def test_method_none_needs_sparsity_zero_and_recovery(tmp_path):
    cfg = _controls_config(tmp_path)
    cfg["family"]["compression"] = [{"method": "none", "sparsities": [0.5], "finetune_epochs": 1}]
    with pytest.raises(ConfigError, match="must be \\[0\\]"):
        family_config(cfg)
    cfg["family"]["compression"] = [{"method": "none", "finetune_epochs": 0}]
    with pytest.raises(ConfigError, match="finetune_epochs >= 1"):
        family_config(cfg)
