import argparse
import csv
import json

import pytest

from repsim.cli.subnetwork import add_parser
from repsim.errors import ConfigError, DataError
from repsim.pipeline.run_search import run_report, run_search

CONFIG = """
[study]
name = "tiny_bise"
seeds = [0]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits-colour"
rho = 0.95
val_rho = 0.1

[model]
name = "cnn"
width = 4
hidden = 8

[train]
epochs = 1

[subnetwork]
method = "surgeon"
bias = "colour"
steps = 6
batch_size = 64
eval_every = 3
checkpoint_every = 3
max_acc_drop = 1.0
biased_test = {{ test_rho = 0.95 }}
"""


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_search_and_report_end_to_end(tmp_path):
    cfg = tmp_path / "bise.toml"
    cfg.write_text(CONFIG.format(out=tmp_path / "reports", cache=tmp_path / "cache"))
    args = _parse(["subnetwork", "search", str(cfg)])
    assert args.func(args) == 0
    run = tmp_path / "reports" / "tiny_bise"
    assert (run / "seed0" / "mask.safetensors").is_file()
    log = json.loads((run / "seed0" / "log.json").read_text())
    assert len(log["log"]) == 6
    args = _parse(["subnetwork", "search", str(cfg), "--resume"])
    assert args.func(args) == 0  # resuming a finished run changes nothing
    assert json.loads((run / "seed0" / "log.json").read_text()) == log
    report = run_report(run, html=False)
    assert set(report["summary"]) == {"vanilla", "subnetwork", "random", "magnitude"}
    rows = [r for r in csv.DictReader((run / "report.csv").open())]
    assert {"test_acc", "biased_test_acc", "conflicting_acc", "bias_probe_acc"} <= set(rows[0])
    assert (run / "report.csv").is_file()
    d = report["minus_vanilla"]["subnetwork"]["test_acc"]["mean"]
    s = report["summary"]
    assert d == pytest.approx(
        s["subnetwork"]["test_acc"]["mean"] - s["vanilla"]["test_acc"]["mean"]
    )


def test_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.format(out=tmp_path, cache=tmp_path).replace("steps = 6", "stepz = 6"))
    with pytest.raises(ConfigError, match="subnetwork.stepz"):
        run_search(cfg)
    with pytest.raises(DataError, match="not a subnetwork run"):
        run_report(tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "colour_digits_bise",
        "colour_digits_bise_final",
        "colour_digits_surgeon",
        "adult_bise",
        "adult_bise_cells",
    ],
)
def test_analysis_configs_validate(name):
    from repsim.pipeline.config import load_config
    from repsim.pipeline.run_search import BISE_KEYS, SEARCH_KEYS, _schema
    from repsim.studies import study_path

    config = load_config(study_path(name), schema=_schema())
    method = config["subnetwork"]["method"]
    assert method == ("surgeon" if "surgeon" in name else "bise")
    assert set(BISE_KEYS if method == "bise" else SEARCH_KEYS) <= set(config["subnetwork"])
    assert config["subnetwork"]["bias"] in ("colour", "sex")


BISE_CONFIG = """
[study]
name = "tiny_bise2"
seeds = [0, 1]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits-colour"
rho = 0.9
val_rho = 0.1

[model]
name = "cnn"
width = 4
hidden = 8

[train]
epochs = 1

[subnetwork]
bias = "colour"
batch_size = 256
head_epochs = 1
tau_period = 1
tau_min = 0.3
biased_test = {{ test_rho = 0.9 }}
"""


def test_bise_search_controls_report_and_html(tmp_path):
    cfg = tmp_path / "bise.toml"
    cfg.write_text(BISE_CONFIG.format(out=tmp_path / "reports", cache=tmp_path / "cache"))
    args = _parse(["subnetwork", "search", str(cfg)])
    assert args.func(args) == 0
    run = tmp_path / "reports" / "tiny_bise2"
    for s in (0, 1):
        files = {p.name for p in (run / f"seed{s}").iterdir()}
        assert {"mask.safetensors", "random.safetensors", "magnitude.safetensors"} <= files
        record = json.loads((run / f"seed{s}" / "record.json").read_text())
        assert record["method"] == "bise" and record["settings"]["head_epochs"] == 1
        assert record["data_budget"]["selection"]["n_samples"] == 189  # the unbiased val split
        controls = json.loads((run / f"seed{s}" / "controls.json").read_text())
        assert controls["random"]["k"] == 2  # as many candidates as the search scored (epochs)
    log = (run / "seed0" / "log.json").read_text()
    args = _parse(["subnetwork", "search", str(cfg), "--resume"])
    assert args.func(args) == 0  # resuming a finished run changes nothing
    assert (run / "seed0" / "log.json").read_text() == log
    args = _parse(["subnetwork", "report", str(run)])
    assert args.func(args) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["n_seeds"] == 2 and report["method"] == "bise"
    s = report["summary"]
    for model in ("vanilla", "subnetwork", "random", "magnitude"):
        assert s[model]["conflicting_acc"]["n"] == 2
    # paired differences are the mean of per-seed differences
    d = report["paired"]["subnetwork-random"]["conflicting_acc"]["mean"]
    assert d == pytest.approx(
        s["subnetwork"]["conflicting_acc"]["mean"] - s["random"]["conflicting_acc"]["mean"]
    )
    layers = [p["layer"] for p in report["probes"]]
    assert layers == ["features.relu1", "features.relu2", "features.relu3", "relu", "bottleneck"]
    assert set(report["verdicts"]) >= {"beats_random", "beats_magnitude", "less_decodable"}
    assert report["data_budget"][0]["selection_n"] == 189
    page = (run / "index.html").read_text()
    for needle in (
        "Subnetwork vs controls",
        "Bias decodability per layer",
        "Data budget",
        "random",
        "magnitude",
        "CKA",
        "data:image/png;base64,",
    ):
        assert needle in page


def test_config_keys_of_the_other_method_are_errors(tmp_path):
    cfg = tmp_path / "bad.toml"
    text = BISE_CONFIG.format(out=tmp_path, cache=tmp_path).replace(
        "head_epochs = 1", "head_epochs = 1\nsteps = 5"
    )
    cfg.write_text(text)
    with pytest.raises(ConfigError, match='subnetwork.steps.*method = "surgeon"'):
        run_search(cfg)


def test_balanced_subsets_make_class_and_bias_independent():
    import numpy as np

    from repsim.data.adult import load_adult
    from repsim.pipeline.run_search import balanced_subset

    test = load_adult(drop_sensitive=True).test
    sex = np.asarray(test.attributes["sex"])
    y = np.asarray(test.y)
    for mode in ("independent", "cells"):
        sub = balanced_subset(test, sex, 0, mode)
        ys, bs = np.asarray(sub.y), np.asarray(sub.attributes["sex"])
        joint = np.array([[np.mean((ys == c) & (bs == k)) for k in (0, 1)] for c in (0, 1)])
        outer = np.outer(joint.sum(1), joint.sum(0))
        np.testing.assert_allclose(joint, outer, atol=2e-3)  # independent
        if mode == "independent":  # the test split's own class and sex shares are kept
            assert abs(ys.mean() - y.mean()) < 2e-3 and abs(bs.mean() - sex.mean()) < 2e-3
            assert len(sub) > 0.4 * len(test)
        else:
            np.testing.assert_allclose(joint, 0.25, atol=1e-12)


def test_independence_weights_are_bise_weights_on_uniform_marginals():
    import numpy as np

    from repsim.subnetwork.bias import bise_weights, independence_weights

    c = 4
    y = np.repeat(np.arange(c), 30)
    b = y.copy()
    for cls in range(c):  # 3 conflicting samples per class, one per other colour
        rows = np.flatnonzero(y == cls)[:3]
        b[rows] = [(cls + j) % c for j in (1, 2, 3)]
    conflicting = b != y
    np.testing.assert_allclose(independence_weights(y, b), bise_weights(conflicting, c))
    w = independence_weights(y, b)
    assert w.mean() == pytest.approx(1.0)
