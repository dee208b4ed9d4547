"""The layer-similarity report for two saved checkpoints (the pipeline of ``repsim compare A B``).

Both checkpoints are :func:`repsim.models.save_model` paths. They are captured on a dataset's
test split (through the activation cache when ``--cache`` is given), compared layer by layer
(same layers, every measure, with bootstrap CIs and per group) and layer x layer (linear CKA),
and the report goes to ``--out``: ``similarity.csv``, ``heatmap.png``, ``per_layer.png``,
``index.html``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repsim.errors import LayerNotFoundError

#: Measures whose bootstrap is resampled from per-sample statistics (cheap).
_CHEAP_BOOTSTRAP = ("cka", "cka_debiased")


def compare_report(
    a: str | Path,
    b: str | Path,
    *,
    data: str = "digits",
    data_options: dict[str, Any] | None = None,
    groups: str | None = None,
    layers: Sequence[str] | None = None,
    measures: Sequence[str] = ("cka",),
    reduction: str = "flatten",
    out: str | Path = "reports/compare",
    cache_dir: str | Path | None = None,
    by_group: bool = True,
    n_boot: int = 200,
    n_boot_other: int = 0,
    seed: int = 0,
    progress: bool | None = None,
    scheduler: Mapping[str, Any] | None = None,
) -> Path:
    """Compare two saved checkpoints layer by layer and write a report directory.

    Parameters
    ----------
    a, b : path
        :func:`repsim.models.save_model` paths (with or without ``.safetensors``).
    data, data_options, groups
        The dataset (a built-in name, ``"package.module:function"`` or an ``.npz`` path;
        :func:`repsim.pipeline.config.open_dataset`), its options, and the group attribute.
    layers : list of str, optional
        Layer names or globs; default every leaf layer of model ``a``. Each must exist in both.
    measures : list of str
        Similarity measures (:func:`repsim.similarity.measures`).
    reduction : {"flatten", "mean", "max", "cls", "last", "mean_tokens"}
        How conv maps become ``[n, d]``.
    out : path
        Report directory.
    cache_dir : path, optional
        Activation store to reuse; default: capture in memory.
    by_group : bool
        Also compute each measure per group.
    n_boot : int
        Bootstrap resamples (over samples) of linear CKA's CIs (``cka``, ``cka_debiased``):
        cheap, resampled from per-sample statistics (``O(n^2)`` per resample, shared by layers
        and groups; :mod:`repsim.similarity.bootstrap`). 0: no intervals.
    n_boot_other : int
        Bootstrap resamples of every other measure's CIs (default 0: none). Each resample
        recomputes the measure (two SVDs per cell for SVCCA/PWCCA/mean CCA), so this is what
        makes a run long; the default keeps ``repsim compare`` interactive.
    seed : int
        Seed of the resamples.

    scheduler : mapping, optional
        Keyword arguments of :func:`repsim.scale.dask.compare_distributed` (``scheduler``,
        ``timeout``, ``retries``, ``chunk_rows``): the whole-sample values are then reduced on
        Dask; per-group rows and their bootstrap CIs are still computed in this process, and the
        whole-sample rows carry no CI.

    Returns
    -------
    pathlib.Path
        The report directory.

    Raises
    ------
    LayerNotFoundError
        If a layer is missing in either model (before any capture).
    """
    from repsim.capture import record
    from repsim.capture.store import ActivationStore
    from repsim.layers import select_layers
    from repsim.models import load_model
    from repsim.report import plots
    from repsim.report.html import Section, write_index
    from repsim.report.tables import write_csv
    from repsim.similarity import compare

    model_a, model_b = load_model(a).eval(), load_model(b).eval()
    from repsim.pipeline.config import open_dataset

    ds = open_dataset(data, data_options)
    test = ds.test.with_groups(groups) if groups else ds.test
    names = select_layers(model_a, list(layers) if layers else None)
    in_b = dict(model_b.named_modules())
    missing = [n for n in names if n.split(":")[0] not in in_b]
    if missing:
        raise LayerNotFoundError(
            f"layers {missing} of {a} are not in {b}; compare layers both models have "
            f"(pass --layers)."
        )
    store = ActivationStore(cache_dir) if cache_dir else None
    opts = {"reduction": reduction, "store": store, "progress": progress}
    cap_a = record(model_a, test, names, name=Path(a).stem, **opts)
    cap_b = record(model_b, test, names, name=Path(b).stem, **opts)
    by = np.asarray(test.group_names, dtype=object)[test.groups] if by_group else None

    boots = {m: n_boot if m in _CHEAP_BOOTSTRAP else n_boot_other for m in measures}

    def in_process() -> list[dict[str, Any]]:
        return compare(
            cap_a,
            cap_b,
            layers=names,
            measures=list(measures),
            groups=by,
            n_boot=boots,
            seed=seed,
            progress=progress,
        ).to_records()

    if scheduler is None:
        records = in_process()
    else:
        # whole-sample values reduced on Dask; per-group rows (and their CIs) in this process
        from repsim.scale.dask import compare_distributed

        records = compare_distributed(
            cap_a, cap_b, layers=names, measures=list(measures), **scheduler
        ).to_records()
        if by is not None:
            records += [r for r in in_process() if r.get("group") is not None]
    rows = [
        {"layer": r["layer_a"], **{k: v for k, v in r.items() if k not in ("layer_a", "layer_b")}}
        for r in records
    ]
    out = Path(out)
    write_csv(rows, out / "similarity.csv")
    full = compare(cap_a, cap_b, layers=names, measures=["cka"], pairs="all", progress=False)
    m = full.matrix("cka")
    figs = [
        (
            plots.similarity_heatmap(
                m.values,
                m.rows,
                m.cols,
                out / "heatmap.png",
                title=f"{Path(a).stem} vs {Path(b).stem}",
                row_label=f"{Path(a).stem} layer",
                col_label=f"{Path(b).stem} layer",
            ),
            "Layer x layer linear CKA.",
        )
    ]
    whole = [r for r in rows if r.get("group") is None]
    summary = []
    for measure in measures:
        vals = [(r["layer"], r["value"]) for r in whole if r["measure"] == measure]
        finite = [v for v in vals if np.isfinite(v[1])]
        if finite:
            lo = min(finite, key=lambda v: v[1])
            summary.append(
                f"{measure}: from {vals[0][1]:.3f} at {vals[0][0]} to "
                f"{vals[-1][1]:.3f} at {vals[-1][0]}; lowest {lo[1]:.3f} at {lo[0]}."
            )
    summary.append(
        f"Accuracy on {data} test: {np.mean(cap_a.predictions == test.y):.4f} "
        f"({Path(a).stem}) vs {np.mean(cap_b.predictions == test.y):.4f} "
        f"({Path(b).stem})."
    )
    with_ci = [m for m in measures if boots[m]]
    without = [m for m in measures if not boots[m]]
    if with_ci and without:
        summary.append(
            f"Bootstrap intervals for {', '.join(with_ci)}; none for {', '.join(without)} "
            "(pass --n-boot-other N to resample those too: each resample recomputes them)."
        )
    notes = sorted({r["note"] for r in rows if r.get("note")})
    if notes:
        summary.append(
            f"{sum(1 for r in rows if r.get('note'))} cell(s) are NaN; why: " + "; ".join(notes[:3])
        )
    summary.append(
        "A single pair has no noise floor: compare two dense seeds the same way "
        "(or run a study) to see how much similarity seed noise alone removes."
    )
    write_index(
        out,
        title=f"repsim compare: {Path(a).stem} vs {Path(b).stem}",
        summary=summary,
        sections=[
            Section(
                "Layer similarity",
                [],
                figs,
                [("Same-layer similarity (group empty: all samples)", rows)],
            )
        ],
    )
    return out
