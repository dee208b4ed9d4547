"""Synthetic model families with a known truth, for the explain tests.

Every dense seed ``s`` has one member per configuration ``(method, sparsity)``, plus the
controls: the recovery-only control ``none+ft`` at sparsity 0 and random pruning
``random+ft`` at each sparsity. Divergence and bias both grow with sparsity (the confound).
Within a configuration, a member's divergence carries the seed's effect ``a_s`` plus member
noise ``e``; its bias carries an independent seed effect ``b_s``, its own noise and, with
``link > 0``, ``link * e``: a real within-configuration association.
"""

from __future__ import annotations

import numpy as np

LAYERS = ["conv1", "conv2", "fc1"]
SPARSITIES = (0.5, 0.7, 0.9)


def family(
    *,
    n_seeds: int = 8,
    link: float = 0.0,
    seed: int = 0,
    methods: tuple[str, ...] = ("magnitude+ft",),
    controls: bool = True,
    onset_from: int = 1,
    dense_shift: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Similarity rows and shift rows of a synthetic family (see the module docstring).

    Layers before ``onset_from`` drift no more than the recovery-only control does.
    """
    rng = np.random.default_rng(seed)
    seed_x = rng.normal(size=n_seeds)  # a dense seed's drift, shared by its members
    seed_y = rng.normal(size=n_seeds)  # its bias, independent of seed_x
    sim: list[dict] = []
    shifts: list[dict] = []
    for a in range(n_seeds):
        for b in range(a + 1, n_seeds):
            for layer in LAYERS:
                sim.append(
                    {
                        "kind": "dense",
                        "seed": a,
                        "seed_b": b,
                        "layer": layer,
                        "measure": "cka",
                        "value": 0.98 + 0.003 * rng.standard_normal(),
                    }
                )
            if dense_shift:
                shifts.append(
                    {
                        "kind": "dense",
                        "seed": a,
                        "seed_b": b,
                        "cev": abs(0.02 + 0.01 * rng.standard_normal()),
                        "sde": abs(0.05 + 0.02 * rng.standard_normal()),
                    }
                )
    configs = [(m, s) for m in methods for s in SPARSITIES]
    if controls:
        configs = [("none+ft", 0.0)] + configs + [("random+ft", s) for s in SPARSITIES]
    for method, sp in configs:
        for i in range(n_seeds):
            e = rng.standard_normal()
            eff = 0.0 if method.startswith("none") else sp
            for li, layer in enumerate(LAYERS):
                drift = 0.2 * eff * li if li >= onset_from else 0.0
                d = 0.02 + drift + 0.01 * seed_x[i] + 0.01 * e
                sim.append(
                    {
                        "kind": "compressed",
                        "method": method,
                        "sparsity": sp,
                        "seed": i,
                        "layer": layer,
                        "measure": "cka",
                        "value": 1 - d,
                    }
                )
            cev = eff + 0.05 * seed_y[i] + 0.05 * rng.standard_normal() + link * 0.05 * e
            acc = 0.95 - 0.1 * eff + 0.01 * rng.standard_normal()
            shifts.append(
                {
                    "method": method,
                    "sparsity": sp,
                    "seed": i,
                    "cev": cev,
                    "sde": 2 * eff + 0.1 * rng.standard_normal(),
                    "accuracy": acc,
                    "dense_accuracy": 0.95,
                }
            )
    return sim, shifts
