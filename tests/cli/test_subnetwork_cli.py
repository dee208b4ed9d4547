import argparse
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
    report = run_report(run)
    assert set(report["summary"]) == {"vanilla", "subnetwork", "magnitude"}
    rows = report["per_seed"][0]["rows"]
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


@pytest.mark.parametrize("name", ["colour_digits_bise", "adult_bise"])
def test_analysis_configs_validate(name):
    from repsim.pipeline.config import load_config
    from repsim.pipeline.run_search import SEARCH_KEYS, _schema
    from repsim.studies import study_path

    config = load_config(study_path(name), schema=_schema())
    assert set(SEARCH_KEYS) <= set(config["subnetwork"])
    assert config["subnetwork"]["bias"] in ("colour", "sex")
