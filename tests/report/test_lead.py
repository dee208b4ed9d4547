"""The report leads with what holds: controlled results first, pooled ones labelled confounded."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

from repsim.report import fmt, lead
from repsim.report.html import POOLED_PREFIX, summarize
from repsim.report.tables import read_csv
from repsim.report.write import write_report
from tests.report import synth

LAYERS = ["conv1", "conv2", "conv3", "fc"]
BIASES = ["cev", "sde", "worst_group_drop"]


def _controlled(p_adj, n_seeds=3, rng=None):
    """Controlled rows whose corrected p-values are ``p_adj[layer][bias]``."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for layer in LAYERS:
        for bias in BIASES:
            est = float(rng.uniform(-0.6, 0.6))
            rows.append(
                {
                    "layer": layer,
                    "bias": bias,
                    "analysis": "within strata",
                    "strata": ["method", "sparsity"],
                    "covariates": [],
                    "estimate": est,
                    "low": est - 0.3,
                    "high": est + 0.3,
                    "ci": 0.95,
                    "p": p_adj[layer][bias] / 4,
                    "p_adjusted": p_adj[layer][bias],
                    "correction": "holm",
                    "n_seeds": n_seeds,
                    "few_seeds": n_seeds < 5,
                }
            )
    return rows


def _results(controlled, **extra):
    return {"relations": {"controlled": controlled}, "alpha": 0.05, **extra}


@pytest.mark.parametrize("n_seeds", [3, 7])
def test_nothing_survives_says_so_first(n_seeds):
    rng = np.random.default_rng(n_seeds)
    p = {lay: {b: float(rng.uniform(0.06, 1.0)) for b in BIASES} for lay in LAYERS}
    text = summarize(_results(_controlled(p, n_seeds)))
    first = text[0]
    assert first.startswith("No layer's drift predicts bias beyond sparsity")
    assert "within-configuration Spearman" in first and "Holm-corrected p > 0.05" in first
    assert f"{n_seeds} seeds" in first
    assert ("few seeds" in first) == (n_seeds < 5)
    smallest = min((v, lay) for lay in LAYERS for v in p[lay].values())
    assert fmt.pvalue(smallest[0]) in first and smallest[1] in first


@pytest.mark.parametrize("hit", [0, 2, 3])
def test_one_surviving_layer_is_named_with_its_corrected_p(hit):
    rng = np.random.default_rng(hit)
    p = {lay: {b: float(rng.uniform(0.2, 1.0)) for b in BIASES} for lay in LAYERS}
    p_hit = float(rng.uniform(0.001, 0.04))
    p[LAYERS[hit]]["sde"] = p_hit
    text = summarize(_results(_controlled(p, 6)))
    assert LAYERS[hit] in text[0] and "SDE" in text[0]
    assert f"Holm-corrected p = {fmt.pvalue(p_hit)}" in text[0]
    assert "No layer's drift" not in " ".join(text)
    # the others are reported as plainly
    assert any(f"other {len(LAYERS) * len(BIASES) - 1} layer x metric pairs" in t for t in text)


def test_old_results_without_controlled_table_do_not_lead_with_pooled():
    corr = [
        {
            "layer": "fc",
            "bias": "cev",
            "spearman": 0.9,
            "spearman_low": 0.8,
            "spearman_high": 0.95,
            "spearman_p": 0.001,
            "n": 20,
        }
    ]
    text = summarize({"relations": {"correlations": corr}})
    assert "no controlled" in text[0]
    pooled = [t for t in text if "tracks cev" in t]
    assert pooled and all(t.startswith(POOLED_PREFIX) for t in pooled)


def _configs():
    return [
        {
            "method": "magnitude+ft",
            "sparsity": 0.5,
            "n_seeds": 3,
            "accuracy": 0.8,
            "cev": 8.442e6,
            "sde": 1.5,
            "worst_group_drop": 0.2,
        },
        {
            "method": "random+ft",
            "sparsity": 0.5,
            "n_seeds": 3,
            "accuracy": 0.12,
            "cev": 3.0,
            "sde": 2.0,
            "worst_group_drop": 0.5,
        },
        {
            "method": "none+ft",
            "sparsity": 0.0,
            "n_seeds": 3,
            "accuracy": 0.9,
            "cev": 0.1,
            "sde": 0.3,
            "worst_group_drop": 0.01,
        },
    ]


def test_fairness_floor_beside_cev_and_collapse_flag():
    rng = np.random.default_rng(5)
    floor = [
        {
            "kind": "dense",
            "seed": a,
            "seed_b": b,
            "cev": float(rng.random()),
            "sde": float(rng.random()),
            "worst_group_drop": float(rng.random()) / 10,
        }
        for a, b in [(0, 1), (0, 2), (1, 2)]
    ]
    res = {
        "configs": _configs(),
        "fairness_floor": floor,
        "seeds": [0, 1, 2],
        "dense": [{"test_accuracy": 0.95}] * 3,
        "n_classes": 10,
    }
    text = summarize(res)
    mag = next(t for t in text if t.startswith("magnitude+ft"))
    cev_floor = float(np.mean([r["cev"] for r in floor]))
    assert f"CEV 8.44×10⁶ (floor {fmt.number(cev_floor)})" in mag
    assert "e+06" not in " ".join(text)
    rnd = next(t for t in text if t.startswith("random+ft"))
    assert "COLLAPSED" in rnd and "COLLAPSED" not in mag
    # controls sit beside what they control: recovery-only first, random after its sparsity
    order = [t.split(" at ")[0] for t in text if " at sparsity " in t]
    assert order == ["none+ft", "magnitude+ft", "random+ft"]
    # no floor: said plainly
    one = summarize({"configs": _configs(), "seeds": [0]})
    assert any("no dense-vs-dense floor: the study has one seed" in t for t in one)


def test_binary_note_and_group_gaps_lead():
    res = _results(
        _controlled({lay: dict.fromkeys(BIASES, 0.5) for lay in LAYERS}),
        n_classes=2,
        configs=_configs(),
    )
    text = summarize(res)
    assert any("CEV = SDE²/2" in t for t in text)
    mag = next(t for t in text if t.startswith("magnitude+ft"))
    assert "CEV" not in mag and mag.index("worst-group") < mag.index("SDE")
    table = lead.association_table(res)
    assert "CEV" not in table[0] and list(table[0])[1] == "worst-group accuracy drop"
    assert not any("CEV = SDE" in t for t in summarize({**res, "n_classes": 10}))


def test_fmt_number_never_scientific():
    for v in (8.442e6, 1e-7, 123.456, 99999.0, -0.5, 1e12):
        s = fmt.number(v)
        assert "e" not in s.lower().replace("nan", "")
    assert fmt.collapse_threshold(0.95, 10) == pytest.approx(0.1 + 0.1 * 0.85)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = synth.study(n_seeds=3, n_boot=100, n_permutations=100)
        index = write_report(out, **st)
    return index, st


def test_report_writes_controlled_tables_and_labels_pooled(report):
    index, st = report
    out = index.parent
    rel = st["results"]["relations"]
    for name in ("controlled", "pooled", "effects", "bias_effects", "controlled_onset"):
        assert len(read_csv(out / f"{name}.csv")) == len(rel[name]), name
    assert len(read_csv(out / "fairness_floor.csv")) == len(st["results"]["fairness_floor"])
    page = index.read_text()
    holds = page.index("What holds")
    pooled = page.index(f"<h2>{POOLED_PREFIX}</h2>")
    assert holds < page.index("<img") < pooled
    assert "tracks cev most strongly" in page[pooled:]
    assert "tracks cev most strongly" not in page[:pooled]
    assert "No layer&#x27;s drift predicts bias beyond sparsity" in page[holds:pooled]
    assert "COLLAPSED" in page and "dense-vs-dense floor" in page
    assert "e+0" not in re.sub(r"data:image/png;base64,[^']*", "", page)
    assert "class='scroll'" in page


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if exe := shutil.which(name):
            return exe
    return None


def test_headless_chromium_first_screen(report, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary found (chromium, chromium-browser, google-chrome)")
    index, _ = report
    uri = index.resolve().as_uri()
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "first.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1400,900", uri],
        check=True,
        timeout=180,
        capture_output=True,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    dom = subprocess.run(
        [*base, "--dump-dom", uri], check=True, timeout=180, capture_output=True, text=True
    ).stdout
    block = dom.index('class="holds"')
    assert block < dom.index("<img")
    assert "No layer's drift predicts bias beyond sparsity" in dom[block : dom.index("<img")]


def _effect(layer, effect, p_adj, comparison="dense_floor", metric=None):
    row = {
        "method": "magnitude",
        "sparsity": 0.5,
        "comparison": comparison,
        "control": "dense",
        "effect": effect,
        "low": effect - 0.01,
        "high": effect + 0.01,
        "p_adjusted": p_adj,
        "n_seeds": 10,
        "correction": "holm",
        "ci": 0.95,
    }
    if metric is None:
        row["layer"] = layer
    else:
        row["metric"] = metric
    return row


def test_significant_differences_below_the_control_are_not_called_exceeding():
    from repsim.report import lead

    results = {
        "seeds": list(range(10)),
        "relations": {
            "effects": [
                _effect("l1", -0.3, 0.001),
                _effect("l2", -0.2, 0.002),
                _effect("l3", +0.1, 0.01),
            ],
            "bias_effects": [
                _effect(None, -0.15, 0.001, metric="acc_drop:minority"),
                _effect(None, +0.02, 0.6, metric="sde"),
            ],
        },
        "fairness_floor": [
            {
                "kind": "dense",
                "seed": 0,
                "seed_b": 1,
                "cev": 1.0,
                "sde": 2.0,
                "worst_group_drop": 0.0,
            }
        ],
        "n_classes": 10,
    }
    (text,), _ = lead.drift_table(results)
    assert "magnitude@0.5 at 1 of 3 layers, from l3" in text
    assert "below its control at 2 layers" in text
    sentence = lead.bias_floor_sentence(results)
    assert "No configuration's bias exceeds the floor" in sentence
    assert "Significantly below it" in sentence and "minority" in sentence
