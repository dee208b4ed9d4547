"""Which classes does pruning hurt on digits-imbalanced? CIEs, Hooker's per-class test, CEV/SDE.

Builds (or reuses from ``cache/``) a family with :func:`repsim.pipeline.family.build`: small CNNs on
``digits-imbalanced`` (classes 3, 5, 8 cut to 10% of their training samples; the test split
stays balanced), ``--seeds`` dense seeds, each pruned by global weight magnitude (classifier
dense, as in Simon Says) to 80/90/95% sparsity with a 5-epoch fine-tune. Per sparsity it prints
the share of CIEs that are minority-class against the minority share of the test set, the
classes Hooker's per-class Welch test flags (Holm-corrected), and CEV/SDE (2021 convention).

Run from the repository root: ``python analyses/scripts/imbalanced_exemplars.py [--seeds 10]``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from repsim import load_dataset
from repsim.fairness import UndefinedMetricWarning, compression_shift, exemplars
from repsim.pipeline.family import build
from repsim.train import evaluate

SPARSITIES = (0.8, 0.9, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="dense seeds (population size)")
    ap.add_argument("--cache", default="cache", help="cache directory of the family")
    args = ap.parse_args()
    family = build(
        {
            "name": "imbalanced-exemplars",
            "dataset": "digits-imbalanced",
            "model": "cnn",
            "seeds": list(range(args.seeds)),
            "cache_dir": args.cache,
            "train": {"epochs": 10, "batch_size": 64, "lr": 3e-3},
            "compression": [
                {
                    "method": "magnitude",
                    "sparsities": list(SPARSITIES),
                    "kd": [False],
                    "finetune_epochs": 5,
                }
            ],
        }
    )
    test = load_dataset("digits-imbalanced").test
    minority = test.groups == 1

    def predictions(**select: object) -> np.ndarray:
        members = sorted(family.select(**select), key=lambda m: m.seed)
        return np.stack([evaluate(m.load(), test).predictions for m in members])

    dense_preds = predictions(method="dense")
    comp_preds = {s: predictions(method="magnitude", sparsity=s) for s in SPARSITIES}
    dense = np.stack(dense_preds)
    print(f"dense accuracy per seed: {np.round((dense == test.y).mean(1), 4).tolist()}")
    print(f"minority share of test set: {minority.mean():.4f}")
    for s in SPARSITIES:
        comp = np.stack(comp_preds[s])
        print(f"\n=== sparsity {s:.0%} ===")
        print(f"compressed accuracy per seed: {np.round((comp == test.y).mean(1), 4).tolist()}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndefinedMetricWarning)
            shift = compression_shift(
                y_true=test.y,
                dense_preds=dense,
                compressed_preds=comp,
                correction="holm",
                on_undefined="drop",
            )
            shift_eps = compression_shift(
                y_true=test.y, dense_preds=dense, compressed_preds=comp, eps=1e-3
            )
        for w in caught:
            print(f"  warning: {w.message}")
        print(
            f"CEV={shift.cev:.4f} SDE={shift.sde:.4f} (classes used {shift.classes_used}); "
            f"with eps=1e-3: CEV={shift_eps.cev:.4f} SDE={shift_eps.sde:.4f}"
        )
        t = shift.per_class_test
        flagged = [r["class"] for r in t.rows if r["significant"] and r["direction"] == "hurt"]
        raw = [r["class"] for r in t.rows if r["p_value"] < 0.05 and r["direction"] == "hurt"]
        print(f"per-class test flags (hurt, Holm p<0.05): {flagged}; uncorrected: {raw}")
        for r in t.rows:
            print(
                f"  class {r['class']}: rel.recall dense {r['dense_relative_recall']:+.4f} "
                f"compressed {r['compressed_relative_recall']:+.4f} p={r['p_value']:.3g} "
                f"p_holm={r['p_adjusted']:.3g}"
            )
        for method in ("modal", "taxicab"):
            ex = exemplars(
                dense_preds=dense,
                compressed_preds=comp,
                method=method,
                fraction=0.05,
                y_true=test.y,
                groups=test.groups,
                group_names=test.group_names,
                sample_id=test.sample_id,
            )
            mino = ex.by_group.row(group="minority")
            print(
                f"CIE {method}: n={len(ex)} ({ex.summary['share_of_test']:.4f} of test); "
                f"minority share of CIEs {mino['share_of_exemplars']:.4f} vs test "
                f"{mino['share_of_test']:.4f} (x{mino['over_representation']:.2f}); "
                f"share of compressed errors on CIEs "
                f"{ex.summary['share_of_compressed_errors']:.4f}; compressed acc on CIEs "
                f"{ex.summary['compressed_accuracy_exemplars']:.4f} vs rest "
                f"{ex.summary['compressed_accuracy_rest']:.4f}"
            )


if __name__ == "__main__":
    main()
