"""A synthetic study with controls (none+ft/kd, random+ft/kd), a fairness floor and groups."""

from __future__ import annotations

from typing import Any

import numpy as np

from repsim.explain import relate

LAYERS = ("conv1", "conv2", "conv3", "fc")
GROUPS = ("maj", "min")


def study(
    *,
    n_seeds: int = 3,
    n_classes: int = 10,
    signal_layer: str | None = None,
    collapse: bool = True,
    seed: int = 0,
    n_boot: int = 200,
    n_permutations: int = 200,
) -> dict[str, Any]:
    """Tables and a results dict; ``signal_layer``: bias tracks drift there within configs."""
    rng = np.random.default_rng(seed)
    sim: list[dict[str, Any]] = []
    shifts: list[dict[str, Any]] = []
    group_shifts: list[dict[str, Any]] = []
    class_shifts: list[dict[str, Any]] = []
    seeds = list(range(n_seeds))
    for a in seeds:
        for b in seeds:
            if b <= a:
                continue
            for layer in LAYERS:
                sim.append(
                    {
                        "kind": "dense",
                        "method": "dense",
                        "sparsity": 0.0,
                        "seed": a,
                        "seed_b": b,
                        "layer": layer,
                        "measure": "cka",
                        "group": None,
                        "value": 0.96 + 0.02 * rng.random(),
                    }
                )
    floor = []
    for a in seeds:
        for b in seeds:
            if b <= a:
                continue
            d = {g: 0.01 * rng.standard_normal() for g in GROUPS}
            floor.append(
                {
                    "kind": "dense",
                    "seed": a,
                    "seed_b": b,
                    "cev": 0.02 + 0.01 * rng.random(),
                    "sde": 0.1 + 0.05 * rng.random(),
                    "worst_group_drop": max(d.values()),
                    **{f"acc_drop:{g}": v for g, v in d.items()},
                }
            )
    configs = []
    for rec in ("ft", "kd"):
        for prune, sps in (("none", (0.0,)), ("magnitude", (0.5, 0.9)), ("random", (0.5, 0.9))):
            for sp in sps:
                method = f"{prune}+{rec}"
                accs = []
                for s in seeds:
                    base = {"none": 0.02, "magnitude": 0.25, "random": 0.4}[prune] * (sp or 1)
                    u = rng.standard_normal()
                    depth = np.linspace(0.3, 1.0, len(LAYERS))
                    for li, layer in enumerate(LAYERS):
                        drift = base * depth[li] + 0.01 * abs(rng.standard_normal())
                        if layer == signal_layer:
                            drift = base * depth[li] + 0.05 * (u + 3)
                        sim.append(
                            {
                                "kind": "compressed",
                                "method": method,
                                "sparsity": sp,
                                "seed": s,
                                "layer": layer,
                                "measure": "cka",
                                "group": None,
                                "value": float(np.clip(1 - drift, 0, 1)),
                            }
                        )
                    noise = u if signal_layer else rng.standard_normal()
                    cev = (10 * base + 0.5 * noise) ** 2 * (
                        1e6 if sp == 0.9 and prune == "random" else 1
                    )
                    drops = {g: base * (1 + i) + 0.02 * noise for i, g in enumerate(GROUPS)}
                    acc = (
                        0.95 - base if not (collapse and prune == "random" and sp == 0.9) else 0.12
                    )
                    accs.append(acc)
                    shifts.append(
                        {
                            "method": method,
                            "sparsity": sp,
                            "seed": s,
                            "cev": float(cev),
                            "sde": float(abs(2 * base + 0.3 * noise)),
                            "worst_group_drop": max(drops.values()),
                            "accuracy": acc,
                            "dense_accuracy": 0.95,
                            **{f"acc_drop:{g}": v for g, v in drops.items()},
                        }
                    )
                    for g, v in drops.items():
                        group_shifts.append(
                            {
                                "method": method,
                                "sparsity": sp,
                                "seed": s,
                                "group": g,
                                "accuracy_change": -v,
                            }
                        )
                    if s == 0:
                        for c in range(n_classes):
                            scale = 10 ** (4 * base)
                            class_shifts.append(
                                {
                                    "method": method,
                                    "sparsity": sp,
                                    "class": c,
                                    "delta_fpr": float(scale * rng.standard_normal() * base),
                                    "delta_fnr": float(scale * rng.standard_normal() * base),
                                }
                            )
                mine = [r for r in shifts if r["method"] == method and r["sparsity"] == sp]
                configs.append(
                    {
                        "method": method,
                        "sparsity": sp,
                        "n_seeds": n_seeds,
                        "accuracy": float(np.mean(accs)),
                        "cev": float(np.mean([r["cev"] for r in mine])),
                        "sde": float(np.mean([r["sde"] for r in mine])),
                        "worst_group_drop": float(np.mean([r["worst_group_drop"] for r in mine])),
                        "mean_similarity": 0.8,
                    }
                )
    rel = relate(
        sim,
        [*shifts, *floor],
        bias=["cev", "sde", "worst_group_drop"],
        layers=list(LAYERS),
        n_boot=n_boot,
        n_permutations=n_permutations,
    ).to_dict()
    results = {
        "study": "synthetic",
        "description": "Synthetic study with controls.",
        "seeds": seeds,
        "layers": list(LAYERS),
        "dense": [{"seed": s, "test_accuracy": 0.95} for s in seeds],
        "configs": configs,
        "relations": rel,
        "alpha": 0.05,
        "n_classes": n_classes,
        "fairness_floor": floor,
    }
    return {
        "results": results,
        "similarity": sim,
        "shifts": shifts,
        "group_shifts": group_shifts,
        "class_shifts": class_shifts,
    }
