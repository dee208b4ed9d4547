"""The study pipeline end to end on a tiny config: report files, cache reuse, bad configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from repsim.errors import ConfigError, LayerNotFoundError

TINY = """
[study]
name = "tiny"
seed = 0
seeds = [0, 1]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "digits"

[model]
name = "cnn"
width = 4
hidden = 16

[train]
epochs = 2
batch_size = 128
lr = 0.01

[compression]
methods = ["magnitude"]
sparsities = [0.5, 0.9]
recovery = ["ft", "kd"]
epochs = 1

[capture]
layers = ["features.relu1", "features.relu3", "relu", "classifier"]
reduction = "mean"

[similarity]
measures = ["cka"]
divergence = "1-cka"

[fairness]
eps = 0.01

[report]
n_boot = 50
n_permutations = 50
"""


def _write(tmp_path: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.format(out=tmp_path / "reports", cache=tmp_path / "cache"))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from repsim.pipeline.study import run_study

    tmp = tmp_path_factory.mktemp("study")
    cfg = _write(tmp)
    out = run_study(cfg, progress=False)
    first = json.loads((out / "results.json").read_text())
    snapshot = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    second_out = run_study(cfg, progress=False)
    second = json.loads((second_out / "results.json").read_text())
    return out, first, second, snapshot


def test_report_files(tiny_run):
    out, first, _, _ = tiny_run
    for name in (
        "results.json",
        "similarity.csv",
        "group_metrics.csv",
        "shifts.csv",
        "relations.csv",
        "noise_floor.csv",
        "onset.csv",
        "exemplars.csv",
        "kd_vs_ft.csv",
        "similarity_vs_sparsity.png",
        "group_error_shifts.png",
        "index.html",
    ):
        assert (out / name).is_file(), name
    assert list(out.glob("heatmap_*.png")) and list(out.glob("divergence_vs_*.png"))
    assert first["seeds"] == [0, 1] and first["work"]["dense_trained"] == 2
    # 8 compressed + the controls on by default: none+ft, none+kd at sparsity 0 and
    # random+ft, random+kd at 0.5 and 0.9, each for both seeds
    assert first["work"]["compressed_built"] == 20
    assert first["work"]["captures"] == 22
    roles = {(c["method"], c["sparsity"]): c["role"] for c in first["configs"]}
    assert roles[("none+ft", 0.0)] == roles[("none+kd", 0.0)] == "recovery-only control"
    assert roles[("random+kd", 0.9)] == "random-pruning control"
    assert roles[("magnitude+ft", 0.5)] == "compressed"
    # the dense-vs-dense floor of the shift metrics: one pair of dense seeds
    (floor,) = first["fairness_floor"]
    assert (floor["kind"], floor["seed"], floor["seed_b"]) == ("dense", 0, 1)
    assert floor["cev"] >= 0 and np.isfinite(floor["sde"])
    assert first["n_classes"] == 10
    # every pruned configuration is compared with both its controls and the floor
    effects = first["relations"]["effects"]
    got = {(r["method"], r["sparsity"], r["comparison"], r["control"]) for r in effects}
    assert ("magnitude+ft", 0.9, "recovery", "none+ft@0.0") in got
    assert ("magnitude+kd", 0.9, "random", "random+kd@0.9") in got
    assert ("magnitude+ft", 0.9, "dense_floor", "dense") in got
    bias = first["relations"]["bias_effects"]
    assert any(r["comparison"] == "dense_floor" and r["metric"] == "cev" for r in bias)
    assert {"config", "versions", "timings", "relations", "kd_vs_ft"} <= set(first)
    page = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(re.findall(r"<img src='data:image/png;base64,", page)) == len(pngs)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)
    # the noise floor sits beside the dense-vs-compressed numbers
    assert all("noise_floor" in r for r in first["relations"]["correlations"])
    assert first["relations"]["noise_floor"][0]["n_pairs"] == 1


def test_second_run_reuses_cache_and_gives_identical_numbers(tiny_run):
    out, first, second, snapshot = tiny_run
    assert second["work"] == {
        "dense_trained": 0,
        "compressed_built": 0,
        "captures": 0,
        "similarity_computed": 0,
        "report_written": 0,
    }
    assert first["work"]["similarity_computed"] > 0 and first["work"]["report_written"] == 1
    for key in ("dense", "configs", "kd_vs_ft", "relations"):
        assert first[key] == second[key], key
    for name, blob in snapshot.items():
        assert (out / name).read_bytes() == blob, name


@pytest.mark.parametrize(
    ("old", "new", "match", "error"),
    [
        ("epochs = 2\nbatch_size", "epocs = 2\nbatch_size", "train.epocs", ConfigError),
        ('measures = ["cka"]', 'measures = ["ckaa"]', "ckaa", ConfigError),
        ("[fairness]\n", '[fairness]\nmetrics = ["cev", "sdee"]\n', "sdee", ConfigError),
        ('"relu", "classifier"', '"relu", "clasifier"', "clasifier", LayerNotFoundError),
        ('methods = ["magnitude"]', 'methods = ["magnitud"]', "magnitud", ConfigError),
        ('recovery = ["ft", "kd"]', 'recovery = ["ft", "distil"]', "distil", ConfigError),
        ('divergence = "1-cka"', 'divergence = "1-svcca"', "svcca", ConfigError),
        ("sparsities = [0.5, 0.9]", "sparsities = [0.5, 1.5]", "sparsities", ConfigError),
        ("[report]\n", "[report]\nn_bot = 3\n", "report.n_bot", ConfigError),
    ],
)
def test_bad_config_fails_before_work(tmp_path, old, new, match, error):
    from repsim.pipeline.study import run_study

    assert old in TINY
    cfg = _write(tmp_path, TINY.replace(old, new))
    with pytest.raises(error, match=re.escape(match)):
        run_study(cfg, progress=False)
    assert not (tmp_path / "cache" / "models").exists()


def test_headless_chromium_screenshot(tiny_run, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (see docs/report_check.md)")
    out = tiny_run[0]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            (out / "index.html").resolve().as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_compare_two_checkpoints(tiny_run, tmp_path):
    from repsim.pipeline.compare_report import compare_report

    out = tiny_run[0]
    cache = out.parent.parent / "cache" / "models"
    a, b = sorted(cache.glob("*/dense/seed*.safetensors"))[:2]
    rep = compare_report(
        a,
        b,
        data="digits",
        layers=["features.relu1", "relu"],
        out=tmp_path / "cmp",
        n_boot=20,
        progress=False,
    )
    for name in ("similarity.csv", "heatmap.png", "index.html"):
        assert (rep / name).is_file()
    page = (rep / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 1
    with pytest.raises(LayerNotFoundError, match="nolayer"):
        compare_report(a, b, data="digits", layers=["nolayer"], out=tmp_path / "x")


def test_compare_on_dask_scheduler_equals_in_process(tiny_run, tmp_path):
    pytest.importorskip("dask")
    from repsim.pipeline.compare_report import compare_report
    from repsim.report.tables import read_csv

    cache = tiny_run[0].parent.parent / "cache" / "models"
    a, b = sorted(cache.glob("*/dense/seed*.safetensors"))[:2]
    common = dict(
        data="digits",
        layers=["features.relu1", "relu"],
        n_boot=0,
        progress=False,
        by_group=False,
        measures=["cka", "cka_debiased"],
    )
    local = compare_report(a, b, out=tmp_path / "local", **common)
    dask = compare_report(a, b, out=tmp_path / "dask", scheduler={"scheduler": "sync"}, **common)
    key = lambda r: (r["layer"], r["measure"])  # noqa: E731
    lv = {key(r): float(r["value"]) for r in read_csv(local / "similarity.csv")}
    dv = {key(r): float(r["value"]) for r in read_csv(dask / "similarity.csv")}
    assert lv.keys() == dv.keys() and len(lv) == 4
    for k in lv:
        assert abs(lv[k] - dv[k]) < 1e-10


TABULAR = """
[study]
name = "tab"
seeds = [0, 1]
out_dir = "{out}"
cache_dir = "{cache}"

[data]
name = "adult"
groups = "sex"

[model]
name = "mlp"
hidden = [8]

[train]
epochs = 1
batch_size = 512

[compression]
methods = ["magnitude"]
sparsities = [0.5]
recovery = ["ft"]
epochs = 1

[capture]
layers = ["features.relu1", "classifier"]

[fairness]
eps = 0.01

[report]
n_boot = 20
n_permutations = 20
"""


def test_tabular_study_reports_without_image_grid(tmp_path):
    from repsim.pipeline.study import run_study

    out = run_study(_write(tmp_path, TABULAR, "tab.toml"), progress=False)
    page = (out / "index.html").read_text()
    assert "not images" in page
    assert not list(out.glob("cie_*.png"))
    assert (out / "exemplars.csv").is_file()


def test_stages_called_alone_reproduce_the_report(tiny_run, tmp_path):
    from repsim.pipeline import study as st
    from repsim.pipeline.config import dataset_from_config, load_config

    _, first, _, snapshot = tiny_run
    config = load_config(first["config_file"])
    config["study"]["out_dir"] = str(tmp_path)
    data = dataset_from_config(config)
    plan = st.plan_study(config, data)
    assert plan.seeds == [0, 1] and plan.n_members == 20
    models = st.build_models(plan, progress=False)
    assert models.work == {"dense_trained": 0, "compressed_built": 0}
    assert sorted(models.dense) == [0, 1]
    assert set(models.compressed) == {
        (f"{m}+{r}", sp, s)
        for m in ("magnitude", "random")
        for r in ("ft", "kd")
        for sp in (0.5, 0.9)
        for s in (0, 1)
    } | {(f"none+{r}", 0.0, s) for r in ("ft", "kd") for s in (0, 1)}
    captures = st.capture_models(plan, models, data.test, progress=False)
    assert captures.new == 0
    for cap in [*captures.dense.values(), *captures.compressed.values()]:
        assert cap.store is None and list(cap) == plan.layers
        assert all(isinstance(cap[layer], np.ndarray) for layer in cap)
    similarity = st.measure_similarity(plan, captures, data.test)
    fairness = st.measure_fairness(plan, captures, data.test)
    explanation = st.explain_study(plan, similarity, fairness)
    out = st.write_study_report(plan, data.test, captures, similarity, fairness, explanation)
    assert out == tmp_path / "tiny"
    for name, blob in snapshot.items():
        assert (out / name).read_bytes() == blob, name
    again = json.loads((out / "results.json").read_text())
    for key in ("dense", "configs", "kd_vs_ft", "relations", "seeds", "layers"):
        assert again[key] == first[key], key
    assert "timings" not in again and again["work"] == {}
