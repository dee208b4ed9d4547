"""Acceptance study: which weights each group relies on, and what 90% pruning removed.

digits-imbalanced (classes 3, 5, 8 cut to 10% of their training samples), SmallCNN, 5 seeds.
Per seed:

1. Train the dense model (10 epochs, Adam lr 3e-3, batch 64).
2. SalUn saliency per group (minority/majority, and per class) on the *test* split (balanced,
   so every group has ~54 samples per class); salient set = top 10% of the prunable weights
   (every Conv/Linear weight), ranked globally.
3. Global magnitude pruning to 90% of those weights: per group, the share of its salient weights
   removed, against chance (the sparsity) and the layer-matched chance.
   Every Conv/Linear weight is pruned, the classifier included (``exclude_classifier=False``;
   ``repsim.compress.prune`` leaves the classifier dense by default).
4. Tran et al. (2022) predictors on the dense model per group (gradient norm, Hessian trace).
5. Four pruned models at 90% sparsity, each fine-tuned 3 epochs (Adam lr 1e-3): magnitude
   (global and layerwise) and FairGRAPE (layerwise, and global budgets), FairGRAPE's importance
   estimated on the *training* split with the minority/majority groups. CEV and SDE against the
   dense model (repsim.fairness.compression_shift, eps=1e-3 to floor zero dense rates), per
   seed; mean and a t-based 95% CI over seeds, and the paired difference FairGRAPE - magnitude.

Run: python analyses/scripts/saliency_imbalanced.py [--seeds 5] [--out reports/saliency_imbalanced]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.nn.utils import prune

from repsim import load_dataset
from repsim.compress import prunable_parameters
from repsim.fairness import compression_shift
from repsim.models import build_model
from repsim.saliency import (
    attribution_share,
    disparate_impact_predictors,
    fairgrape_prune,
    group_layer_attributions,
    plot_saliency_histograms,
    plot_salient_removed,
    pruned_units,
    pruning_mask,
    salient_jaccard,
    salient_removed,
    weight_saliency,
)
from repsim.train import evaluate, fit

SPARSITY = 0.9
FRACTION = 0.1
EPOCHS, FINETUNE_EPOCHS = 10, 3


def magnitude_prune(model: torch.nn.Module, sparsity: float, scope: str) -> torch.nn.Module:
    """L1 magnitude pruning of every Conv/Linear weight (global or per layer)."""
    pruned = copy.deepcopy(model)
    params = [
        (m, "weight") for m in pruned.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
    ]
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        for m, name in params:
            prune.l1_unstructured(m, name, amount=sparsity)
    return pruned


def t_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% t interval."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="reports/saliency_imbalanced")
    parser.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits-imbalanced", minority_classes=(3, 5, 8), fraction=0.1)
    train, test = data.train, data.test
    t0 = time.time()
    removed_rows, class_rows, predictor_rows, jac_rows, attr_rows = [], [], [], [], []
    shift = {
        arm: {"cev": [], "sde": [], "acc": [], "minority_acc": [], "majority_acc": []}
        for arm in (
            "magnitude_global",
            "magnitude_layerwise",
            "fairgrape_layerwise",
            "fairgrape_global",
        )
    }
    dense_acc = []
    for seed in range(args.seeds):
        model = build_model("cnn", input_shape=train.input_shape, n_classes=10, seed=seed)
        fit(model, train, epochs=EPOCHS, batch_size=64, lr=3e-3, seed=seed, progress=False)
        dense_eval = evaluate(model, test)
        dense_acc.append(dense_eval.accuracy)
        names = prunable_parameters(model, exclude_classifier=False).names

        # --- salient weights removed by global magnitude pruning
        sal = weight_saliency(model, test, parameters=names)
        sal_cls = weight_saliency(
            model, test, groups="class", parameters=names, include_overall=False
        )
        pruned = magnitude_prune(model, SPARSITY, "global")
        keep = pruning_mask(pruned)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for r in salient_removed(sal, keep, fraction=FRACTION):
                removed_rows.append({"seed": seed, **r})
            for r in salient_removed(sal_cls, keep, fraction=FRACTION):
                if r["parameter"] == "(all)":
                    class_rows.append({"seed": seed, **r})
        for r in salient_jaccard({g: sal[g] for g in ("minority", "majority")}, fraction=FRACTION):
            jac_rows.append({"seed": seed, **r})
        if seed == 0:
            plot_salient_removed(
                salient_removed(sal, keep, fraction=FRACTION),
                path=out / "salient_removed_seed0.png",
                title="Top-10% salient weights removed at 90% magnitude sparsity (seed 0)",
            )
            plot_saliency_histograms(sal, path=out / "saliency_hist_seed0.png")

        # --- Tran et al. predictors on the dense model, and captum attribution on fc units
        for r in disparate_impact_predictors(model, test, n_probes=8, seed=seed):
            predictor_rows.append({"seed": seed, **r})
        attr = group_layer_attributions(model, test, "fc", n_steps=8, include_overall=False)
        units = pruned_units(keep["fc.weight"], threshold=0.9)
        shares = attribution_share(attr, units)
        attr_rows.append(
            {
                "seed": seed,
                "n_units": len(units),
                "n_pruned_units": int(units.sum()),
                **{f"share_{g}": v for g, v in shares.items()},
            }
        )

        # --- magnitude vs FairGRAPE at the same sparsity, fine-tuned
        arms = {
            "magnitude_global": pruned,
            "magnitude_layerwise": magnitude_prune(model, SPARSITY, "layerwise"),
            "fairgrape_layerwise": fairgrape_prune(
                model, train, SPARSITY, scope="layerwise", exclude_classifier=False
            )[0],
            "fairgrape_global": fairgrape_prune(
                model, train, SPARSITY, scope="global", exclude_classifier=False
            )[0],
        }
        for arm, m in arms.items():
            fit(
                m,
                train,
                epochs=args.finetune_epochs,
                batch_size=64,
                lr=args.finetune_lr,
                seed=seed,
                progress=False,
            )
            ev = evaluate(m, test)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cs = compression_shift(
                    y_true=test.y,
                    dense_preds=dense_eval.predictions,
                    compressed_preds=ev.predictions,
                    eps=1e-3,
                    test=False,
                )
            shift[arm]["cev"].append(cs.cev)
            shift[arm]["sde"].append(cs.sde)
            shift[arm]["acc"].append(ev.accuracy)
            for code, gname in enumerate(test.group_names):
                rows = test.groups == code
                shift[arm][f"{gname}_acc"].append(
                    float((ev.predictions[rows] == test.y[rows]).mean())
                )
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", flush=True)

    # ----------------------------------------------------------------- summaries
    lines = [f"dense accuracy: {t_ci(dense_acc)}"]
    summary: dict[str, object] = {"dense_accuracy": dense_acc}
    lines.append(
        f"\nTop-{FRACTION:.0%} salient weights removed by {SPARSITY:.0%} global "
        "magnitude pruning (mean [95% t CI] over seeds):"
    )
    removed_summary = {}
    for g in ("majority", "minority", "overall"):
        rows = [r for r in removed_rows if r["group"] == g and r["parameter"] == "(all)"]
        share = t_ci([r["removed_share"] for r in rows])
        matched = t_ci([r["chance_layer_matched"] for r in rows])
        chance = float(np.mean([r["chance"] for r in rows]))
        removed_summary[g] = {
            "removed_share": share,
            "chance": chance,
            "chance_layer_matched": matched,
        }
        lines.append(
            f"  {g:9s} removed {share[0]:.4f} [{share[1]:.4f}, {share[2]:.4f}]  "
            f"chance {chance:.4f}  layer-matched {matched[0]:.4f}"
        )
    diff = t_ci(
        [
            a["removed_share"] - b["removed_share"]
            for a, b in zip(
                [r for r in removed_rows if r["group"] == "minority" and r["parameter"] == "(all)"],
                [r for r in removed_rows if r["group"] == "majority" and r["parameter"] == "(all)"],
                strict=True,
            )
        ]
    )
    lines.append(f"  minority - majority: {diff[0]:+.4f} [{diff[1]:+.4f}, {diff[2]:+.4f}]")
    lines.append("  per layer (mean over seeds): removed share minority / majority / chance")
    for p in dict.fromkeys(r["parameter"] for r in removed_rows):
        vals = {}
        for g in ("minority", "majority"):
            v = [
                r["removed_share"]
                for r in removed_rows
                if r["group"] == g and r["parameter"] == p and np.isfinite(r["removed_share"])
            ]
            vals[g] = float(np.mean(v)) if v else float("nan")
        ch = np.mean([r["chance"] for r in removed_rows if r["parameter"] == p])
        lines.append(f"    {p:22s} {vals['minority']:.4f} / {vals['majority']:.4f} / {ch:.4f}")
    summary["salient_removed"] = removed_summary
    summary["minority_minus_majority"] = diff
    lines.append("  per class (mean over seeds):")
    per_class = {}
    for c in test.class_names:
        v = t_ci([r["removed_share"] for r in class_rows if r["group"] == c])
        per_class[c] = v
        lines.append(
            f"    class {c}{' (minority)' if c in '358' else '           '} "
            f"{v[0]:.4f} [{v[1]:.4f}, {v[2]:.4f}]"
        )
    summary["salient_removed_per_class"] = per_class
    jac = t_ci([r["jaccard"] for r in jac_rows])
    lines.append(
        f"  Jaccard(minority, majority salient sets): {jac[0]:.4f} "
        f"[{jac[1]:.4f}, {jac[2]:.4f}], chance {jac_rows[0]['chance']:.4f}"
    )
    summary["jaccard_minority_majority"] = jac

    lines.append("\nTran et al. predictors on the dense model (mean over seeds):")
    for g in ("majority", "minority", "overall"):
        rows = [r for r in predictor_rows if r["group"] == g]
        lines.append(
            f"  {g:9s} acc {np.mean([r['accuracy'] for r in rows]):.4f} "
            f"grad_norm {np.mean([r['grad_norm'] for r in rows]):.4f} "
            f"trace(H) {np.mean([r['hessian_trace'] for r in rows]):.3f}"
        )
    summary["predictors"] = predictor_rows
    lines.append(
        "\nfc attribution (LayerIntegratedGradients) on units with >=90% of inputs pruned:"
    )
    for key in ("share_majority", "share_minority"):
        lines.append(f"  {key}: {t_ci([r[key] for r in attr_rows])}")
    lines.append(f"  pruned fc units per seed: {[r['n_pruned_units'] for r in attr_rows]}")
    summary["attribution"] = attr_rows

    lines.append(
        f"\nCEV / SDE at {SPARSITY:.0%} sparsity after {args.finetune_epochs}-epoch "
        f"fine-tuning (lr {args.finetune_lr:g}) "
        "(Simon Says 2021 convention, eps=1e-3; mean [95% t CI]):"
    )
    for arm, v in shift.items():
        cev, sde, acc = t_ci(v["cev"]), t_ci(v["sde"]), t_ci(v["acc"])
        lines.append(
            f"  {arm:20s} CEV {cev[0]:.4f} [{cev[1]:.4f}, {cev[2]:.4f}]  SDE {sde[0]:.4f} "
            f"[{sde[1]:.4f}, {sde[2]:.4f}]  acc {acc[0]:.4f}  minority acc "
            f"{np.mean(v['minority_acc']):.4f}  majority acc {np.mean(v['majority_acc']):.4f}"
        )
    for fg, mg in (
        ("fairgrape_layerwise", "magnitude_layerwise"),
        ("fairgrape_global", "magnitude_global"),
        ("fairgrape_layerwise", "magnitude_global"),
    ):
        for metric in ("cev", "sde"):
            d = t_ci(np.subtract(shift[fg][metric], shift[mg][metric]).tolist())
            lines.append(f"  {fg} - {mg} {metric.upper()}: {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]")
    summary["shift"] = shift
    summary["seconds"] = time.time() - t0
    text = "\n".join(lines)
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
