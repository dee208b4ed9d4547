"""The guide's ``repsim compare`` example runs to completion with a report (issue 19, item 4)."""

import warnings

import torch

from repsim.cli import main
from repsim.errors import SimilarityWarning
from repsim.models import build_model, save_model
from repsim.report.tables import read_csv


def test_guide_compare_example_finishes_with_a_report(tmp_path, capsys):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("cnn", input_shape=(1, 8, 8), n_classes=10, seed=seed)
        paths.append(str(save_model(model, tmp_path / f"m{seed}")))
    out, cache = tmp_path / "a-vs-b", tmp_path / "cache" / "activations"
    # docs/guide.md: repsim compare A B --data digits-imbalanced --layers "features.*"
    #   --measures cka svcca --out reports/a-vs-b --cache cache/activations
    # (a smaller test split keeps the test fast; every other argument is the guide's)
    argv = [
        "compare",
        *paths,
        "--data",
        "digits-imbalanced",
        "--option",
        "test_fraction=0.12",
        "--layers",
        "features.*",
        "--measures",
        "cka",
        "svcca",
        "--out",
        str(out),
        "--cache",
        str(cache),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert "report written to" in capsys.readouterr().out
    for name in ("similarity.csv", "heatmap.png", "index.html"):
        assert (out / name).is_file()
    rows = read_csv(out / "similarity.csv")
    layers = {r["layer"] for r in rows}
    assert len(layers) == 11 and {r["measure"] for r in rows} == {"cka", "svcca"}
    cka_all = [r for r in rows if r["measure"] == "cka" and not r["group"]]
    assert all(r["ci_low"] not in ("", None) for r in cka_all)  # CKA intervals by default
    # at most one similarity warning line per measure, however many cells were undefined
    sim = [w for w in caught if issubclass(w.category, SimilarityWarning)]
    assert len(sim) <= 2
